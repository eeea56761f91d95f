"""The shim without a VM: the calls it can answer alone, its events, its fifos."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from tests.unit.conftest import mock_pod
from virtcontainers import api, oci
from virtcontainers.config import Cmd, ContainerConfig, ImagePaths
from virtcontainers.errors import ExistsError, NotFoundError, StateError, VcError
from virtcontainers.shim import ttrpc
from virtcontainers.shim.events import Publisher
from virtcontainers.shim.fifos import Fifos, open_fifos
from virtcontainers.shim.protos import (
    EVENTS_SERVICE,
    TASK_SERVICE,
    event_service,
    events,
    task,
)
from virtcontainers.shim.service import Task, TaskService, ttrpc_error
from virtcontainers.shim.ttrpc import Code, TtrpcError


def listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_api_errors_become_the_codes_containerd_reads() -> None:
    assert ttrpc_error(NotFoundError("container", "c1")).code is Code.NOT_FOUND
    assert ttrpc_error(ExistsError("container", "c1")).code is Code.ALREADY_EXISTS
    assert ttrpc_error(StateError("pod 'p'", "start", "stopped", ["running"])).code is (
        Code.FAILED_PRECONDITION
    )
    assert ttrpc_error(VcError("other")).code is Code.UNKNOWN


def test_calls_about_unknown_tasks_checkpoint_and_shutdown(tmp_path: Path) -> None:
    async def main() -> None:
        shutdown = asyncio.Event()
        published: list[Message] = []
        service = TaskService(published.append, shutdown, cgroup_v2=False)
        server = ttrpc.Server()
        server.register(TASK_SERVICE, service.methods())
        await server.serve(listener(tmp_path / "s.sock"))
        client = await ttrpc.Client.connect(tmp_path / "s.sock")
        for method, request in (
            ("State", task.StateRequest(id="nope")),
            ("Wait", task.WaitRequest(id="nope")),
            ("Kill", task.KillRequest(id="nope", signal=9)),
        ):
            with pytest.raises(TtrpcError) as raised:
                await client.call(TASK_SERVICE, method, request.SerializeToString())
            assert raised.value.code is Code.NOT_FOUND, method
            assert "nope" in raised.value.detail
        with pytest.raises(TtrpcError) as refused:
            checkpoint = task.CheckpointTaskRequest(id="c1", path="/tmp/x")
            await client.call(TASK_SERVICE, "Checkpoint", checkpoint.SerializeToString())
        assert refused.value.code is Code.UNIMPLEMENTED
        assert "checkpoint is not supported" in refused.value.detail
        connected = await client.call_message(
            TASK_SERVICE, "Connect", task.ConnectRequest(id="c1"), task.ConnectResponse
        )
        assert connected.shim_pid == os.getpid()
        assert not shutdown.is_set()
        await client.call(
            TASK_SERVICE, "Shutdown", task.ShutdownRequest(id="c1").SerializeToString()
        )
        assert shutdown.is_set()
        assert published == []
        await client.close()
        await server.close()

    asyncio.run(main())


def test_create_refuses_a_host_network_sandbox_naming_the_setting(tmp_path: Path) -> None:
    """Before any VM: the CRI gets INVALID_ARGUMENT and the reason."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    spec = {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["/pause"], "cwd": "/"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]},
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "sb",
        },
    }
    (bundle / "config.json").write_text(json.dumps(spec))

    async def main() -> None:
        published: list[Message] = []
        service = TaskService(published.append, asyncio.Event(), cgroup_v2=False)
        server = ttrpc.Server()
        server.register(TASK_SERVICE, service.methods())
        await server.serve(listener(tmp_path / "s.sock"))
        client = await ttrpc.Client.connect(tmp_path / "s.sock")
        create = task.CreateTaskRequest(id="sb", bundle=str(bundle))
        with pytest.raises(TtrpcError) as refused:
            await client.call(TASK_SERVICE, "Create", create.SerializeToString())
        assert refused.value.code is Code.INVALID_ARGUMENT
        assert "(hostNetwork: true), which a pod in a VM cannot do" in refused.value.detail
        assert (service.tasks, published) == ({}, [])
        await client.close()
        await server.close()

    asyncio.run(main())


def test_events_are_forwarded_in_order_with_their_topics(tmp_path: Path) -> None:
    async def main() -> None:
        received: list[event_service.Envelope] = []

        async def forward(
            request: event_service.ForwardRequest, _ctx: ttrpc.CallContext
        ) -> Message:
            received.append(request.envelope)
            return empty_pb2.Empty()

        containerd = ttrpc.Server()
        containerd.register(
            EVENTS_SERVICE, {"Forward": ttrpc.unary(event_service.ForwardRequest, forward)}
        )
        await containerd.serve(listener(tmp_path / "c.sock"))
        publisher = Publisher(f"unix://{tmp_path / 'c.sock'}", "k8s.io")
        publisher.publish(events.TaskStart(container_id="c1", pid=7))
        publisher.publish(events.TaskExit(container_id="c1", id="c1", pid=7, exit_status=3))
        publisher.publish(events.TaskOOM(container_id="c1"))
        await publisher.close()
        await containerd.close()
        assert [e.topic for e in received] == ["/tasks/start", "/tasks/exit", "/tasks/oom"]
        assert {e.namespace for e in received} == {"k8s.io"}
        assert received[1].event.type_url == "containerd.events.TaskExit"
        exit_event = events.TaskExit()
        exit_event.ParseFromString(received[1].event.value)
        assert exit_event.exit_status == 3
        assert received[0].timestamp.seconds > 0

    asyncio.run(main())


def test_stdin_ends_only_after_close_io(tmp_path: Path) -> None:
    paths = Fifos(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "err"))
    for path in (paths.stdin, paths.stdout, paths.stderr):
        os.mkfifo(path)
    # containerd's side: readers of stdout and stderr, opened first.
    out_r = os.open(paths.stdout, os.O_RDONLY | os.O_NONBLOCK)
    err_r = os.open(paths.stderr, os.O_RDONLY | os.O_NONBLOCK)
    stdio, hold = open_fifos(paths)
    assert stdio.stdin is not None and stdio.stdout is not None and stdio.stderr is not None
    assert os.get_blocking(stdio.stdin)
    writer = os.open(paths.stdin, os.O_WRONLY)
    os.write(writer, b"data")
    os.close(writer)  # containerd's writer goes, before its CloseIO
    assert os.read(stdio.stdin, 10) == b"data"
    os.set_blocking(stdio.stdin, False)
    with pytest.raises(BlockingIOError):  # not end-of-file: the shim still holds a writer
        os.read(stdio.stdin, 10)
    hold.release()
    assert os.read(stdio.stdin, 10) == b""
    os.write(stdio.stdout, b"out")
    assert os.read(out_r, 10) == b"out"
    stdio.close()
    for fd in (out_r, err_r):
        os.close(fd)


def test_a_terminal_has_no_stderr(tmp_path: Path) -> None:
    out = tmp_path / "out"
    os.mkfifo(out)
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    stdio, hold = open_fifos(Fifos(stdout=str(out), stderr=str(tmp_path / "x"), terminal=True))
    assert (stdio.stdin, stdio.stderr, hold.fd) == (None, None, None)
    stdio.close()
    os.close(reader)


def test_kill_of_a_process_that_just_exited_answers_not_found(
    run_root: Path, image: ImagePaths, rootfs: Path, tmp_path: Path
) -> None:
    """The guest can see an exit before the shim's waiter does: containerd's CRI
    takes only NOT_FOUND as "already finished" (StopPodSandbox failed on the
    FAILED_PRECONDITION this used to answer)."""
    api.run_pod(mock_pod("kp", image))
    api.create_container("kp", ContainerConfig("c1", rootfs, Cmd(("true",))), api.Stdio())
    api.start_container("kp", "c1")
    assert api.wait_container("kp", "c1").exit_code == 0

    async def main() -> None:
        service = TaskService(lambda _event: None, asyncio.Event(), cgroup_v2=False)
        fifos = Fifos("", "", "", terminal=False)
        init = service._new_process("c1", "", fifos)  # its waiter has not seen the exit yet
        init.started = True
        service.tasks["c1"] = Task("c1", tmp_path, "kp", oci.PodRole.CONTAINER, {}, init)
        with pytest.raises(TtrpcError) as raised:
            await service.kill(task.KillRequest(id="c1", signal=15), None)  # type: ignore[arg-type]
        assert raised.value.code is Code.NOT_FOUND
        assert "already finished" in raised.value.detail

    try:
        asyncio.run(main())
    finally:
        api.stop_pod("kp")
        api.delete_pod("kp")
