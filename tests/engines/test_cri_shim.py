"""containerd's CRI plugin (Debian's containerd 1.6) driving a pod through containerd-shim-vc-v2.

The kubelet's view, as in test_cri.py, but the handler's ``runtime_type`` is
``io.containerd.vc.v2``: containerd starts our shim, one per pod, and no
runc shim or vc-runtime is in the path.  The network, the images and the
clean-up are test_cri.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from tests.cri.client import Cri, generate_stubs
from tests.engines.containerd import (
    VC_SHIM_RUNTIME,
    shim_pids,
    with_vc_shim,
)
from tests.engines.streaming import STDERR, STDIN, STDOUT, ChannelStream, exit_code
from tests.engines.test_cri import (
    CNI_PLUGINS,
    HANDLER,
    PAUSE_IMAGE,
    CriEnv,
    _assert_nothing_left,
    _cgroup_dirs,
    _check_memory_update,
    _container_config,
    _exec_sync,
    _run_sandbox,
    _sandbox_config,
    _wait_for_log,
    cri_environment,
    start_containers,
)
from tests.netlab import Lab
from virtcontainers import api
from virtcontainers.factory.templates import Factory, init_template
from virtcontainers.host.proc import process_usage
from virtcontainers.network.netns import run_in_netns

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def shim_plugin_toml(cni_conf: Path) -> str:
    """The CRI plugin's settings with the vc handler on our shim (docs/shim.md)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
    sandbox_image = "{PAUSE_IMAGE}"
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [{cri}.containerd.runtimes.{HANDLER}]
    runtime_type = "{VC_SHIM_RUNTIME}"
  [{cri}.cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{cni_conf}"
"""


@pytest.fixture(scope="session")
def cri_stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return generate_stubs(tmp_path_factory.mktemp("cri-stubs"))


@pytest.fixture
def shim_cri_env(
    run_root: Path,
    busybox_rootfs: Path,
    lab: Lab,
    cri_stubs: tuple[ModuleType, ModuleType],
) -> Iterator[CriEnv]:
    env = with_vc_shim({**os.environ, "VC_RUN_DIR": str(run_root)})

    def plugins(work: Path) -> str:
        return shim_plugin_toml(work / "cni")

    with cri_environment("vcshc-", env, plugins, busybox_rootfs, lab, cri_stubs) as cri_env:
        yield cri_env


def test_cri_pod_of_two_containers_in_one_vm_through_the_shim(shim_cri_env: CriEnv) -> None:
    cri, pb = shim_cri_env.cri, shim_cri_env.cri.pb
    sandbox_config = _sandbox_config(pb, shim_cri_env.logs, shim_cri_env.cgroup_parent)
    sandbox_id, _pod_ip = _run_sandbox(shim_cri_env, sandbox_config)
    scripts = (
        # /dev is a tmpfs of the guest's, charged to the container's cgroup
        # (the CRI's /dev/shm is a host directory shared into the VM).
        ("holder", "head -c 40000000 /dev/zero > /dev/ballast; exec sleep 1000000"),
        ("worker", "echo worker up; exec sleep 1000000"),
    )
    ids = start_containers(cri, sandbox_id, sandbox_config, scripts)
    [pod] = api.list_pods()
    assert sorted(c.id for c in pod.containers) == sorted([sandbox_id, *ids])
    assert len(shim_pids(shim_cri_env.containerd.address)) == 1  # one shim for the pod

    executed = _exec_sync(cri, ids[1], "echo out; echo err >&2; hostname")
    assert (executed.exit_code, executed.stdout, executed.stderr) == (0, b"out\nvc-pod\n", b"err\n")
    assert _exec_sync(cri, ids[1], "exit 7").exit_code == 7
    assert _wait_for_log(shim_cri_env.logs / "worker.log", " stdout F worker up\n")

    # The container's own numbers, from its cgroup in the guest.
    filled = 'until [ "$(wc -c < /dev/ballast)" = 40000000 ]; do sleep 0.2; done'
    assert _exec_sync(cri, ids[0], filled).exit_code == 0
    stats = cri.call("ContainerStats", pb.ContainerStatsRequest(container_id=ids[0])).stats
    guest = api.container_stats(sandbox_id, ids[0])
    assert stats.memory.working_set_bytes.value > 40_000_000, stats
    assert abs(stats.memory.working_set_bytes.value - guest.memory_bytes) < guest.memory_bytes / 10

    _check_pod_stats(shim_cri_env, sandbox_id, pod)
    _check_exec_timeout(cri, ids[1])

    for container_id in ids:
        cri.call("StopContainer", pb.StopContainerRequest(container_id=container_id, timeout=5))
        status = cri.call("ContainerStatus", pb.ContainerStatusRequest(container_id=container_id))
        assert status.status.state == pb.CONTAINER_EXITED
        cri.call("RemoveContainer", pb.RemoveContainerRequest(container_id=container_id))
    cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    _assert_nothing_left(shim_cri_env, pod.vm_pid)
    assert _cgroup_dirs(f"{shim_cri_env.cgroup_parent}/{sandbox_id}") == []
    assert shim_pids(shim_cri_env.containerd.address) == []


def _check_pod_stats(env: CriEnv, sandbox_id: str, pod: api.PodStatus) -> None:
    """The pod's figures are its VM's: PodSandboxStats reads the pod's host cgroup,
    which holds QEMU and the pod daemon, and the sandbox task's Stats (containerd's
    metrics, `ctr task metrics`) is their PSS, not the pause process's usage."""
    cri, pb = env.cri, env.cri.pb
    vm_cgroup = Path(f"/proc/{pod.vm_pid}/cgroup").read_text()
    assert f":{env.cgroup_parent}/{sandbox_id}\n" in vm_cgroup, vm_cgroup
    pod_stats = cri.call("PodSandboxStats", pb.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id))
    assert pod_stats.stats.linux.memory.working_set_bytes.value > 0, pod_stats

    metrics = env.containerd.ctr("tasks", "metrics", sandbox_id)
    assert metrics.returncode == 0, metrics.stderr
    line = next(line for line in metrics.stdout.splitlines() if "memory.usage_in_bytes" in line)
    reported = int(line.split()[-1])
    processes = [process_usage(pid) for pid in (pod.vm_pid, pod.daemon_pid)]
    host = sum(usage.pss_bytes for usage in processes if usage is not None)
    assert abs(reported - host) < host / 5, (reported, host)
    pause = api.container_stats(sandbox_id, sandbox_id).memory_bytes
    assert reported > 10 * pause, (reported, pause)


def _check_exec_timeout(cri: Cri, container_id: str) -> None:
    """An ExecSync that outlives its timeout returns then, and its process is
    killed in the guest (containerd's Kill of the exec reaches it)."""
    request = cri.pb.ExecSyncRequest(container_id=container_id, cmd=["sleep", "4321"], timeout=2)
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        cri.call("ExecSync", request)
    assert time.monotonic() - began < 10, raised.value
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    left = _exec_sync(cri, container_id, "ps -o args | grep -c '^sleep 4321' || true")
    assert left.stdout == b"0\n", left


@pytest.mark.parametrize(
    ("option", "setting"), [("network", "hostNetwork"), ("ipc", "hostIPC")], ids=str
)
def test_a_sandbox_sharing_the_nodes_namespace_is_refused_naming_it(
    shim_cri_env: CriEnv, option: str, setting: str
) -> None:
    """The shim's Create refuses it before any VM boots; nothing is left of it."""
    cri, pb = shim_cri_env.cri, shim_cri_env.cri.pb
    config = _sandbox_config(pb, shim_cri_env.logs, shim_cri_env.cgroup_parent)
    namespaces = config.linux.security_context.namespace_options
    setattr(namespaces, option, pb.NODE)
    request = pb.RunPodSandboxRequest(config=config, runtime_handler=HANDLER)
    with pytest.raises(grpc.RpcError) as refused:
        cri.call("RunPodSandbox", request)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert f"its pod shares the node's ({setting}: true)" in str(refused.value.details())
    assert api.list_pods() == []
    deadline = time.monotonic() + 30
    while shim_pids(shim_cri_env.containerd.address) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert shim_pids(shim_cri_env.containerd.address) == []


def test_cri_exec_attach_and_update_through_the_streaming_server(shim_cri_env: CriEnv) -> None:
    """Exec and Attach as `kubectl exec -i` and `kubectl attach -i` reach them:
    URLs on containerd's streaming server, spoken to over a websocket."""
    cri, pb = shim_cri_env.cri, shim_cri_env.cri.pb
    sandbox_config = _sandbox_config(pb, shim_cri_env.logs, shim_cri_env.cgroup_parent)
    sandbox_id, _pod_ip = _run_sandbox(shim_cri_env, sandbox_config)
    config = _container_config(pb, "echoer", 'while read line; do echo "echo:$line"; done')
    config.stdin = True
    create = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
    )
    container_id = cri.call("CreateContainer", create).container_id
    cri.call("StartContainer", pb.StartContainerRequest(container_id=container_id))
    [pod] = api.list_pods()

    script = 'read line; echo "got $line"; echo err >&2; exit 3'
    exec_request = pb.ExecRequest(
        container_id=container_id, cmd=["sh", "-c", script], stdin=True, stdout=True, stderr=True
    )
    stream = _stream(shim_cri_env, cri.call("Exec", exec_request).url)
    stream.send(STDIN, b"hello\n")
    assert exit_code(stream.finish()) == 3
    assert (stream.received[STDOUT], stream.received[STDERR]) == (b"got hello\n", b"err\n")

    terminal = pb.ExecRequest(
        container_id=container_id,
        cmd=["sh", "-c", 'tty; read line; echo "got $line"'],
        tty=True,
        stdin=True,
        stdout=True,
    )
    stream = _stream(shim_cri_env, cri.call("Exec", terminal).url)
    stream.send(STDIN, b"there\n")
    assert exit_code(stream.finish()) == 0
    assert b"/dev/pts/" in stream.received[STDOUT], stream.received
    assert b"got there\r\n" in stream.received[STDOUT], stream.received

    attach = pb.AttachRequest(container_id=container_id, stdin=True, stdout=True, stderr=True)
    stream = _stream(shim_cri_env, cri.call("Attach", attach).url)
    stream.send(STDIN, b"ping\n")
    assert stream.read_until(STDOUT, b"echo:ping\n") == b"echo:ping\n"
    stream.close()
    status = cri.call("ContainerStatus", pb.ContainerStatusRequest(container_id=container_id))
    assert status.status.state == pb.CONTAINER_RUNNING  # detaching leaves it running

    _check_memory_update(cri, container_id)

    cri.call("StopContainer", pb.StopContainerRequest(container_id=container_id, timeout=5))
    cri.call("RemoveContainer", pb.RemoveContainerRequest(container_id=container_id))
    cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    _assert_nothing_left(shim_cri_env, pod.vm_pid)


PORT_DATA, PORT_ERROR = 0, 1
"""The channels of one forwarded port over the streaming server's websocket."""


def test_cri_port_forward_reaches_a_server_in_the_vm(shim_cri_env: CriEnv) -> None:
    """`kubectl port-forward`'s path: PortForward URLs on containerd's streaming
    server, each session one connection that containerd dials to localhost in
    the pod's namespace, which the pod forwards to its VM.  Several at once,
    bytes both ways; none of the forwarding is left in the namespace after."""
    cri, pb = shim_cri_env.cri, shim_cri_env.cri.pb
    sandbox_config = _sandbox_config(pb, shim_cri_env.logs, shim_cri_env.cgroup_parent)
    sandbox_id, _pod_ip = _run_sandbox(shim_cri_env, sandbox_config)
    [server] = start_containers(
        cri, sandbox_id, sandbox_config, (("echo", "exec nc -ll -p 8080 -e cat"),)
    )
    [pod] = api.list_pods()
    # Held open: the namespace outlives containerd's removal of its path, for the checks.
    pod_netns = os.open(shim_cri_env.pod_netns[-1], os.O_RDONLY | os.O_CLOEXEC)
    try:
        listening = "until netstat -ltn | grep -q ':8080 '; do sleep 0.2; done"
        assert _exec_sync(cri, server, listening).exit_code == 0
        assert "vc_port_forward" in _in_netns(pod_netns, "nft", "list", "tables")
        assert _in_netns(pod_netns, "ss", "-Hltn") != ""  # the pod daemon's listeners

        port = (8080).to_bytes(2, "little")  # each channel's first bytes name the port
        sessions = [_port_forward(shim_cri_env, sandbox_id, 8080) for _ in range(3)]
        for index, session in enumerate(sessions):
            session.send(PORT_DATA, f"hello {index}\n".encode())
        for index, session in enumerate(sessions):
            expected = port + f"hello {index}\n".encode()
            assert session.read_until(PORT_DATA, expected) == expected
        bulk = os.urandom(60_000) * 8  # beyond the agent stream's window
        for offset in range(0, len(bulk), 60_000):
            sessions[1].send(PORT_DATA, bulk[offset : offset + 60_000])
        expected = port + b"hello 1\n" + bulk
        assert sessions[1].read_until(PORT_DATA, expected) == expected
        for session in sessions:
            session.close()

        # Nothing listens on 8081 in the guest: the session ends without data.
        refused = _port_forward(shim_cri_env, sandbox_id, 8081)
        refused.send(PORT_DATA, b"anyone?")
        refused.finish()
        assert refused.received.get(PORT_DATA) == (8081).to_bytes(2, "little")

        assert _exec_sync(cri, server, "echo still serving").exit_code == 0
        cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
        assert "vc_port_forward" not in _in_netns(pod_netns, "nft", "list", "tables")
        assert _in_netns(pod_netns, "ss", "-Hltn") == ""
    finally:
        os.close(pod_netns)
    _assert_nothing_left(shim_cri_env, pod.vm_pid)


def _port_forward(env: CriEnv, sandbox_id: str, port: int) -> ChannelStream:
    request = env.cri.pb.PortForwardRequest(pod_sandbox_id=sandbox_id, port=[port])
    return _stream(env, env.cri.call("PortForward", request).url)


def _in_netns(netns_fd: int, *argv: str) -> str:
    """A command's output, run in the namespace (it inherits the thread's)."""

    def run() -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
        return done.stdout

    return run_in_netns(netns_fd, run)


def _stream(env: CriEnv, url: str) -> ChannelStream:
    """A session with the streaming server, which listens in containerd's namespace."""
    return ChannelStream.open(url, env.netns)


def test_pods_outlive_a_containerd_restart_and_a_killed_shim_is_cleaned_up(
    shim_cri_env: CriEnv,
) -> None:
    """containerd stopped (SIGTERM) and started again on its root and state finds
    the pod through each bundle's shim address: the same shim, the same VM, its
    containers running and answering, exit codes kept from before and seen after.
    Then the shim is killed: containerd's `delete` leaves no pod behind, and
    removing the sandbox leaves no QEMU, tap, namespace or mount."""
    cri, pb = shim_cri_env.cri, shim_cri_env.cri.pb
    containerd = shim_cri_env.containerd
    sandbox_config = _sandbox_config(pb, shim_cri_env.logs, shim_cri_env.cgroup_parent)
    sandbox_id, _pod_ip = _run_sandbox(shim_cri_env, sandbox_config)
    quitter, worker = start_containers(
        cri,
        sandbox_id,
        sandbox_config,
        (("quitter", "exit 7"), ("worker", "trap 'exit 5' TERM; while true; do sleep 0.2; done")),
    )
    assert _exited(cri, quitter).exit_code == 7
    [pod] = api.list_pods()
    [shim] = shim_pids(containerd.address)

    containerd.restart()
    _wait_for_cri(cri)

    assert shim_pids(containerd.address) == [shim]
    assert api.pod_status(sandbox_id).vm_pid == pod.vm_pid
    sandbox = cri.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
    assert sandbox.status.state == pb.SANDBOX_READY
    assert _status(cri, worker).status.state == pb.CONTAINER_RUNNING
    assert _exited(cri, quitter).exit_code == 7
    executed = _exec_sync(cri, worker, "echo still here")
    assert (executed.exit_code, executed.stdout) == (0, b"still here\n")
    cri.call("StopContainer", pb.StopContainerRequest(container_id=worker, timeout=30))
    assert _exited(cri, worker).exit_code == 5  # its TaskExit reached the new containerd

    os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while api.list_pods() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert api.list_pods() == [], containerd.log_tail()
    cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    _assert_nothing_left(shim_cri_env, pod.vm_pid)
    assert shim_pids(containerd.address) == []


def _wait_for_cri(cri: Cri, timeout: float = 60) -> None:
    """Until the CRI plugin of a restarted containerd has recovered its pods."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cri.call("Status", cri.pb.StatusRequest(), timeout=10)
            return
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the CRI plugin did not come back"
            time.sleep(0.5)


def _status(cri: Cri, container_id: str) -> Any:
    return cri.call("ContainerStatus", cri.pb.ContainerStatusRequest(container_id=container_id))


def _exited(cri: Cri, container_id: str, timeout: float = 60) -> Any:
    """The container's status once it has exited."""
    deadline = time.monotonic() + timeout
    while (status := _status(cri, container_id).status).state != cri.pb.CONTAINER_EXITED:
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    return status


def test_a_sandbox_clones_a_template_that_fits(shim_cri_env: CriEnv) -> None:
    """The shim's pods start as `virtc run` ones do (boot "auto"): a CRI pod of the
    default size is a clone once `virtc factory init` has made its template."""
    cri, pb = shim_cri_env.cri, shim_cri_env.cri.pb
    factory = Factory()  # under the run root, where the shim's pods look
    template, _removed = init_template(1, 512, factory=factory)
    try:
        sandbox_config = _sandbox_config(pb, shim_cri_env.logs, shim_cri_env.cgroup_parent)
        sandbox_id, pod_ip = _run_sandbox(shim_cri_env, sandbox_config)
        pod = api.pod_status(sandbox_id)
        assert pod.template == template.key
        create = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            config=_container_config(pb, "worker", "exec sleep 1000000"),
            sandbox_config=sandbox_config,
        )
        container_id = cri.call("CreateContainer", create).container_id
        cri.call("StartContainer", pb.StartContainerRequest(container_id=container_id))
        executed = _exec_sync(cri, container_id, "hostname; ip -o -4 addr show eth0")
        assert executed.exit_code == 0, executed
        assert executed.stdout.startswith(b"vc-pod\n"), executed  # the clone's own identity
        assert f"inet {pod_ip}/".encode() in executed.stdout, executed  # its CNI address

        cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
        _assert_nothing_left(shim_cri_env, pod.vm_pid)
    finally:
        factory.destroy()
