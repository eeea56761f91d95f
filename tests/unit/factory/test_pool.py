"""The pool's bookkeeping: its size, the offers a pod makes to standbys, and the
clean-up of a dead standby (the real standby is tested with VMs, in
tests/integration/test_factory.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.conftest import mock_pod
from virtcontainers import api
from virtcontainers.agent.mock import MockAgent
from virtcontainers.config import ImagePaths
from virtcontainers.daemon import server, standby
from virtcontainers.daemon.launcher import DaemonArgs, read_ready
from virtcontainers.errors import ConfigError
from virtcontainers.factory import pool
from virtcontainers.host import proc as hostproc
from virtcontainers.hypervisor.base import VMConfig, VMState
from virtcontainers.hypervisor.devices import SerialPortDevice, SharedFsDevice, moved_device
from virtcontainers.hypervisor.mock import MockHypervisor
from virtcontainers.records import ProcessRef
from virtcontainers.store import Store, write_json_atomic


@pytest.fixture
def factory_root(tmp_path: Path) -> Path:
    root = tmp_path / "factory"
    root.mkdir(mode=0o700)
    return root


@pytest.fixture
def pool_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pool.ENV_POOL, "1")


def test_the_pool_size_is_the_factorys_setting(factory_root: Path) -> None:
    assert pool.pool_size(factory_root) == 0  # no setting: no pool
    pool.set_pool_size(factory_root, 3)
    assert pool.pool_size(factory_root) == 3
    with pytest.raises(ConfigError, match="pool size"):
        pool.set_pool_size(factory_root, pool.MAX_POOL_SIZE + 1)
    for text in ("not json", '{"size": -1}', '{"size": 99}', '{"size": "2"}', "[]"):
        (factory_root / pool.POOL_FILE).write_text(text)
        assert pool.pool_size(factory_root) == 0, text


def test_fill_starts_nothing_without_a_pool(tmp_path: Path, factory_root: Path) -> None:
    assert pool.fill(tmp_path / "run", factory_root, "k") == 0
    assert not pool.standby_root(tmp_path / "run").exists()


class FakeStandby:
    """A ready standby's directory and claim socket, answering every offer with
    *answer*; what it was offered is kept."""

    def __init__(self, run_root: Path, factory_root: Path, answer: dict[str, object]) -> None:
        self.path = pool.standby_root(run_root) / "k-000000"
        self.path.mkdir(parents=True)
        pool.write_record(self.path, factory_root, None, ready=True)
        self.answer = answer
        self.offers: list[tuple[dict[str, object], int]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path / pool.CLAIM_SOCKET))
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # closed without an offer
            return
        with conn:
            data, fds, _flags, _addr = socket.recv_fds(conn, 4096, 3)
            self.offers.append((json.loads(data), len(fds)))
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps(self.answer).encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a waiting accept
        self.listener.close()
        self.thread.join(timeout=30)


@pytest.fixture
def offered(tmp_path: Path) -> Iterator[list[int]]:
    """Three fds, as a pod's start offers them (ready pipe, lock, log)."""
    read_end, write_end = os.pipe()
    lock = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fds = [write_end, lock, read_end]
    yield fds
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize("answer", [{"ok": True}, {"ok": False, "why": "not my template"}])
def test_a_pod_is_offered_to_a_ready_standby_which_says_whether_it_takes_it(
    tmp_path: Path, factory_root: Path, pool_on: None, offered: list[int], answer: dict[str, object]
) -> None:
    run_root = tmp_path / "run"
    fake = FakeStandby(run_root, factory_root, answer)
    try:
        owner = ProcessRef(1, 2)
        taken = pool.claim(run_root, factory_root, "p", offered, owner, debug=False)
    finally:
        fake.close()
    assert taken is answer["ok"]
    assert fake.offers == [({"pod": "p", "owner": "1:2", "debug": False}, 3)]


def test_no_offer_without_the_pool_or_to_another_factorys_standby(
    tmp_path: Path, factory_root: Path, offered: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_root = tmp_path / "run"
    assert not pool.claim(run_root, factory_root, "p", offered, None, debug=False)  # no pool dir
    fake = FakeStandby(run_root, factory_root, {"ok": True})
    try:
        assert not pool.claim(run_root, factory_root, "p", offered, None, debug=False)  # VC_POOL=0
        monkeypatch.setenv(pool.ENV_POOL, "1")
        other = tmp_path / "other-factory"
        assert not pool.claim(run_root, other, "p", offered, None, debug=False)
    finally:
        fake.close()
    assert fake.offers == []


def test_a_dead_standbys_vm_and_directory_are_collected(tmp_path: Path, factory_root: Path) -> None:
    run_root = tmp_path / "run"
    path = pool.standby_root(run_root) / "k-000001"
    (path / "vm").mkdir(parents=True)
    vm = subprocess.Popen(["sleep", "600"])  # the VM a killed standby left
    try:
        dead = subprocess.Popen(["true"])
        daemon, vm_ref = hostproc.of(dead.pid), hostproc.of(vm.pid)
        dead.wait()
        assert daemon is not None and vm_ref is not None
        record = {
            "factory": str(factory_root),
            "daemon": daemon.to_record(),
            "vm": vm_ref.to_record(),
            "ready": True,
        }
        write_json_atomic(path / pool.RECORD, record)
        [info] = pool.standbys(run_root)
        assert not info.alive and info.key == "k"
        assert pool.collect(run_root) == ["k-000001"]
        assert vm.wait(timeout=30) == -9
    finally:
        vm.kill()
        vm.wait()
    assert not pool.standby_root(run_root).exists()


@pytest.mark.parametrize(
    ("data", "fds"),
    [
        (b"not json", 3),
        (b'{"pod": "p", "owner": null, "debug": false}', 2),
        (b'{"pod": 7, "owner": null, "debug": false}', 3),
        (b'{"pod": "p", "owner": "x:y", "debug": false}', 3),
        (b'{"pod": "p", "owner": null, "debug": "no"}', 3),
    ],
)
def test_a_malformed_offer_is_no_offer(data: bytes, fds: int) -> None:
    assert standby.parse_offer(data, list(range(100, 100 + fds))) is None


def test_a_good_offer_is_read() -> None:
    offer = standby.parse_offer(b'{"pod": "p", "owner": "5:6", "debug": true}', [7, 8, 9])
    assert offer == standby.Offer("p", 7, 8, 9, ProcessRef(5, 6), True)


def test_a_relocated_device_follows_its_directory(tmp_path: Path) -> None:
    moves = {tmp_path / "standby" / "vm": tmp_path / "pod" / "vm"}
    port = SerialPortDevice("agent", tmp_path / "standby" / "vm" / "agent.sock", "agent")
    assert moved_device(port, moves) == SerialPortDevice(
        "agent", tmp_path / "pod" / "vm" / "agent.sock", "agent"
    )
    elsewhere = SharedFsDevice("shared", tmp_path / "other", "vcshared")
    assert moved_device(elsewhere, moves) == elsewhere


def test_a_clone_its_pod_cannot_take_is_stopped(
    run_root: Path, image: ImagePaths, tmp_path: Path
) -> None:
    """A pod that is no longer starting when its claimed clone would boot it:
    the daemon stops the clone's VM (nothing else would) and reports why."""
    api.create_pod(mock_pod("late", image))  # created, not starting
    hypervisor = MockHypervisor()
    config = VMConfig(vm_id="sb", kernel=image.kernel, initrd=image.initrd, run_dir=tmp_path)
    read_end, write_end = os.pipe()

    async def scenario() -> int:
        await hypervisor.create(config)
        await hypervisor.start()
        args = DaemonArgs(run_root, "late", write_end, False, False)
        return await server.run(
            Store(), args, clone=server.RunningClone("k", hypervisor, MockAgent())
        )

    try:
        assert asyncio.run(scenario()) == 1
        answer = read_ready(read_end, 5)
    finally:
        os.close(read_end)
    assert answer is not None and answer["ok"] is False
    assert hypervisor.state is VMState.STOPPED
