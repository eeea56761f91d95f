"""The daemon's requests: their JSON form both ways, and what they refuse."""

from __future__ import annotations

import dataclasses
import json

import pytest

from virtcontainers.agent.results import ContainerStats, ExitStatus
from virtcontainers.daemon import calls
from virtcontainers.errors import ConfigError, DaemonError
from virtcontainers.status import InterfaceStatus

STATUS = InterfaceStatus(
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


STATS = ContainerStats(**{name: 7 for name in ContainerStats.__dataclass_fields__})


@pytest.mark.parametrize(
    ("request_", "result"),
    [
        (calls.WaitProcess("c", None), ExitStatus(137, 9, "the VM stopped")),
        (calls.WaitProcess(None, "e1"), ExitStatus(0)),
        (calls.GetContainerStats("c"), STATS),
    ],
    ids=["killed", "exited", "stats"],
)
def test_results_answers_round_trip(request_: calls.Request[object], result: object) -> None:
    assert request_.decode_result(over_the_wire(request_.encode_result(result))) == result


@pytest.mark.parametrize(
    ("request_", "answer"),
    [
        (calls.WaitProcess("c", None), None),
        (calls.WaitProcess("c", None), {"exit_code": "0"}),
        (calls.WaitProcess("c", None), {"exit_code": 0, "signal": "KILL"}),
        (calls.WaitProcess("c", None), {"exit_code": 0, "error": 1}),
        (calls.GetContainerStats("c"), [1]),
        (calls.GetContainerStats("c"), {**dataclasses.asdict(STATS), "pids": -1}),
    ],
)
def test_a_malformed_result_is_a_daemon_error_naming_the_method(
    request_: calls.Request[object], answer: object
) -> None:
    with pytest.raises(DaemonError, match=f"^{request_.METHOD}: malformed answer"):
        request_.decode_result(answer)


@pytest.mark.parametrize(
    "request_",
    [calls.ListProcesses("c"), calls.WatchEvents(0, 0), calls.ListInterfaces()],
    ids=lambda r: r.METHOD,
)
def test_a_list_answer_that_is_not_a_list_is_a_daemon_error(
    request_: calls.Request[object],
) -> None:
    with pytest.raises(DaemonError, match=f"^{request_.METHOD}: malformed answer"):
        request_.decode_result({"not": "a list"})
