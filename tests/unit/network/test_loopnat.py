"""The loopback redirect of a pod's namespace, on real namespaces and nftables.

Every connection is made inside a namespace the test made (``lab``), to its
own loopback; the fixture deletes the namespace afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import pytest

from tests.netlab import Lab, ip
from virtcontainers.errors import ConfigError
from virtcontainers.network.loopnat import (
    TABLE,
    original_port,
    redirect_loopback,
    remove_redirect,
    remove_table_here,
    ruleset,
)
from virtcontainers.network.netns import run_in_netns

T = TypeVar("T")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def test_ruleset_spares_the_listeners_own_ports() -> None:
    text = ruleset(41000, 41001)
    assert "ip daddr 127.0.0.1 tcp dport != 41000 redirect to :41000" in text
    assert "ip6 daddr ::1 tcp dport != 41001 redirect to :41001" in text
    assert "type nat hook output priority -100" in text
    # Made again from scratch each time: the old table goes in the same transaction.
    assert text.startswith(f"table inet {TABLE}\ndelete table inet {TABLE}\n")
    assert "ip6" not in ruleset(41000, None)


def _inside(path: str, work: Callable[[], T]) -> T:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, work)
    finally:
        os.close(fd)


def _tables(name: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", name, "nft", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _dial(family: socket.AddressFamily, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((address, port))
    return sock


@pytest.mark.parametrize(
    ("family", "address"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_loopback_connections_reach_the_listener_with_their_port(
    lab: Lab, family: socket.AddressFamily, address: str
) -> None:
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    listeners = redirect_loopback(path, "pf")
    try:
        assert f"table inet {TABLE}" in _tables(name)
        listener = next(s for s in listeners.sockets if s.family == family)
        listener.setblocking(True)
        listener.settimeout(10)
        for port in (80, 8080, 65535):
            client = _inside(path, partial(_dial, family, address, port))
            accepted, _ = listener.accept()
            with client, accepted:
                assert original_port(accepted) == port
                client.sendall(b"x")
                assert accepted.recv(1) == b"x"
    finally:
        remove_redirect(listeners)
    assert TABLE not in _tables(name)
    assert listeners.sockets == []
    with pytest.raises(ConnectionRefusedError):
        _inside(path, lambda: _dial(family, address, 8080))


def test_a_dead_daemons_table_is_removed_by_the_clean_up(lab: Lab) -> None:
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    listeners = redirect_loopback(path, "pf")
    listeners.close()  # as the daemon's death closes them, and nothing else
    assert f"table inet {TABLE}" in _tables(name)
    assert _inside(path, lambda: remove_table_here(path)) == []
    assert TABLE not in _tables(name)
    assert _inside(path, lambda: remove_table_here(path)) == []  # nothing there: no failure


def test_a_missing_namespace_is_a_config_error(lab: Lab) -> None:
    with pytest.raises(ConfigError):
        redirect_loopback("/run/netns/vct-no-such-namespace", "pf")


def test_removal_is_quiet_when_the_namespace_is_gone(lab: Lab) -> None:
    name, path = lab.netns()
    ip("-n", name, "link", "set", "lo", "up")
    listeners = redirect_loopback(path, "pf")
    ip("netns", "del", name)
    remove_redirect(listeners)
    assert listeners.sockets == []
