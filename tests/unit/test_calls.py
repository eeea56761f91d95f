"""The daemon's network requests: their JSON form both ways, and what they refuse."""

from __future__ import annotations

import json

import pytest

from virtcontainers import calls
from virtcontainers.errors import ConfigError, DaemonError

STATUS = calls.InterfaceStatus(
    "eth1", "02:00:00:00:00:01", 1400, ("203.0.113.2/24", "2001:db8::2/64"), True
)


def over_the_wire(value: object) -> object:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize(
    "request_",
    [calls.AddInterface("eth1"), calls.RemoveInterface("eth1"), calls.ListInterfaces()],
    ids=lambda r: r.METHOD,
)
def test_network_requests_round_trip(request_: calls.Request[object]) -> None:
    params = over_the_wire(request_.to_params())
    assert isinstance(params, dict)
    assert calls.REQUESTS[request_.METHOD].from_params(params) == request_


def test_interface_answers_round_trip() -> None:
    add = calls.AddInterface("eth1")
    assert add.decode_result(over_the_wire(add.encode_result(STATUS))) == STATUS
    listing = calls.ListInterfaces()
    assert listing.decode_result(over_the_wire(listing.encode_result([STATUS]))) == [STATUS]


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {"name": "eth1"},
        {**STATUS.to_dict(), "mtu": "1400"},
        {**STATUS.to_dict(), "addresses": [1]},
        {**STATUS.to_dict(), "hotplugged": 1},
    ],
)
def test_a_malformed_interface_answer_is_a_daemon_error(answer: object) -> None:
    with pytest.raises(DaemonError, match="add_interface: malformed interface"):
        calls.AddInterface("eth1").decode_result(answer)
    with pytest.raises(DaemonError, match="list_interfaces: malformed"):
        calls.ListInterfaces().decode_result([answer])


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a:b", "a b", "x" * 16, "é" * 8, "\ud800"])
def test_interface_names_linux_would_refuse_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not an interface name") as caught:
        calls.AddInterface(name)
    assert caught.value.field == "add_interface.name"
    with pytest.raises(ConfigError):
        calls.RemoveInterface.from_params({"name": name})


def test_interface_names_linux_accepts_are_accepted() -> None:
    for name in ("eth0", "x" * 15, "veth-a.b_c@1", "é" * 7):
        assert calls.AddInterface(name).name == name
