"""podman (Debian's) running containers through vc-runtime, each in a VM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import shell_session_in_pty, short_temp_dir
from tests.engines.conftest import IMAGE, Podman
from virtcontainers import api
from virtcontainers.factory import pool
from virtcontainers.factory.templates import Factory, init_template

pytestmark = [pytest.mark.engine, pytest.mark.vm, pytest.mark.usefixtures("guest_image")]


def test_run_prints_and_exits_with_status(podman: Podman) -> None:
    result = podman.run("run", "--rm", IMAGE, "sh", "-c", "echo hello from podman; exit 5")
    assert (result.returncode, result.stdout) == (5, "hello from podman\n"), result.stderr
    assert api.list_pods() == []


def test_exec_stop_and_kill(podman: Podman) -> None:
    started = podman.run("run", "-d", "--name", "web", IMAGE, "sleep", "1000")
    assert started.returncode == 0, started.stderr
    executed = podman.run("exec", "web", "sh", "-c", "echo in exec; echo oops >&2; exit 4")
    assert (executed.returncode, executed.stdout, executed.stderr) == (4, "in exec\n", "oops\n")

    stopped = podman.run("stop", "--time", "1", "web")
    assert stopped.returncode == 0, stopped.stderr
    inspected = podman.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "web")
    assert inspected.stdout.split() == ["exited", "137"]
    assert podman.run("rm", "web").returncode == 0

    assert podman.run("run", "-d", "--name", "victim", IMAGE, "sleep", "1000").returncode == 0
    killed = podman.run("kill", "--signal", "KILL", "victim")
    assert killed.returncode == 0, killed.stderr
    waited = podman.run("wait", "victim")
    assert waited.stdout.strip() == "137"
    assert podman.run("rm", "victim").returncode == 0
    assert api.list_pods() == []


def test_run_interactive_terminal(podman: Podman) -> None:
    argv = [*podman.base, "run", "-it", "--rm", IMAGE, "sh"]
    code, output = shell_session_in_pty(argv, podman.env)
    assert code == 6
    assert b"/dev/pts/" in output


GATEWAY_SERVER = """
import socket
listener = socket.create_server(("0.0.0.0", 7000))
listener.settimeout(300)
print("listening", flush=True)
connection, _ = listener.accept()
connection.sendall(b"from the gateway\\n")
connection.close()
"""

PUBLISHED_CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 120
while True:
    try:
        with socket.create_connection((sys.argv[1], 8080), timeout=30) as s:
            data = s.recv(100)
        if data:
            print(data.decode().strip())
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("nothing answered on port 8080")
    time.sleep(0.5)
"""


def test_default_bridge_network_and_a_published_port(podman: Podman) -> None:
    """podman's own bridge, made in the test's namespace: the VM gets the
    container's veth, reaches the gateway, and is reached through -p."""
    server = subprocess.Popen(
        [*podman.enter, sys.executable, "-c", GATEWAY_SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        fetched = podman.run("run", "--rm", IMAGE, "sh", "-c", "ip -o -4 addr; nc 10.88.0.1 7000")
        assert fetched.returncode == 0, fetched.stderr
        assert "inet 10.88." in fetched.stdout
        assert fetched.stdout.endswith("from the gateway\n")
    finally:
        server.kill()
        server.wait()

    script = "while true; do echo from the container | nc -l -p 8000; done"
    started = podman.run("run", "-d", "--name", "srv", "-p", "8080:8000", IMAGE, "sh", "-c", script)
    assert started.returncode == 0, started.stderr
    for address in ("10.88.0.1", "127.0.0.1"):
        answer = subprocess.run(
            [*podman.enter, sys.executable, "-c", PUBLISHED_CLIENT, address],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert answer.stdout.strip() == "from the container", (address, answer.stderr)
    assert podman.run("rm", "--force", "--time", "0", "srv").returncode == 0
    assert api.list_pods() == []


def test_memory_and_cpu_limits_hold_in_the_guest(podman: Podman) -> None:
    # podman gives no cgroup namespace here (the host is not cgroup v2 only): the
    # container's own cgroup is found through /proc/self/cgroup.
    own = "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)"
    script = f"cat {own}/memory.max {own}/cpu.max; tail /dev/zero"
    limits = ("--memory", "64m", "--cpus", "0.5")
    result = podman.run("run", "--rm", *limits, IMAGE, "sh", "-c", script)
    assert result.stdout.splitlines() == [str(64 << 20), "50000 100000"], result.stderr
    assert result.returncode == 137, result.stderr  # tail /dev/zero: killed at 64 MiB


def test_the_pods_qemu_runs_in_the_engines_cgroup_and_stats_show_it(
    podman: Podman, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = podman.run("run", "-d", "--name", "busy", "--cpus", "1.5", IMAGE, "sleep", "1000")
    assert started.returncode == 0, started.stderr
    # podman passes its runtime no environment: the pod is in the default run directory.
    monkeypatch.delenv("VC_RUN_DIR")
    pod = api.pod_status(started.stdout.strip())
    assert pod.vm_pid is not None
    placed = Path(f"/proc/{pod.vm_pid}/cgroup").read_text().splitlines()
    cpu = next(line for line in placed if line.split(":")[1] in ("cpu", "cpu,cpuacct"))
    assert "libpod" in cpu.split(":")[2], placed  # podman's cgroupsPath, not ours
    shim = podman.run("inspect", "--format", "{{.State.Pid}}", "busy").stdout.strip()
    assert cpu in Path(f"/proc/{shim}/cgroup").read_text().splitlines()  # the shim too
    quota = Path("/sys/fs/cgroup/cpu", cpu.split(":")[2].lstrip("/"), "cpu.cfs_quota_us")
    assert quota.read_text().strip() == "150000"  # the VM as a whole gets 1.5 CPUs

    stats = podman.run("stats", "--no-stream", "--format", "json", "busy")
    assert stats.returncode == 0, stats.stderr
    [entry] = json.loads(stats.stdout)
    assert entry["mem_usage"].split()[0] not in ("0B", "--"), entry
    assert podman.run("rm", "--force", "--time", "0", "busy").returncode == 0
    assert not quota.parent.exists()  # removed with the pod


def test_a_container_is_a_clone_of_its_factorys_template(
    podman: Podman, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vc-runtime gives a pod the default shape, which `make demo` and the
    background builder make a template of."""
    base = short_temp_dir("vcf-")
    factory = Factory(base / "factory")
    try:
        template, _removed = init_template(factory=factory)
        podman.set_vc_env(VC_FACTORY_DIR=str(factory.root))
        started = podman.run("run", "-d", "--name", "clone", IMAGE, "sleep", "1000")
        assert started.returncode == 0, started.stderr
        executed = podman.run("exec", "clone", "echo", "in a clone")
        assert executed.stdout == "in a clone\n", executed.stderr
        with monkeypatch.context() as default_run_dir:  # podman passes VC_RUN_DIR on to no one
            default_run_dir.delenv("VC_RUN_DIR")
            assert api.pod_status(started.stdout.strip()).template == template.key
        assert podman.run("rm", "--force", "--time", "0", "clone").returncode == 0
    finally:
        factory.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_a_container_takes_a_waiting_clone_of_the_pool(
    podman: Podman, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a pool, podman's pod (its network namespace, its host cgroup) is
    the waiting clone, taken over."""
    base = short_temp_dir("vcf-")
    factory = Factory(base / "factory")
    default_root = Path("/run/virtcontainers")  # podman passes VC_RUN_DIR on to no one
    try:
        template, _removed = init_template(factory=factory)
        monkeypatch.setenv(pool.ENV_POOL, "1")
        pool.set_pool_size(factory.root, 1)
        assert pool.fill(default_root, factory.root, template.key) == 1
        deadline = time.monotonic() + 180  # a hang guard: a standby boots in seconds
        while not (ready := [s for s in pool.standbys(default_root) if s.ready]):
            assert time.monotonic() < deadline, pool.standbys(default_root)
            time.sleep(0.2)
        [standby] = [s for s in ready if s.key == template.key]
        assert standby.vm is not None
        podman.set_vc_env(VC_FACTORY_DIR=str(factory.root), VC_POOL="1")
        started = podman.run("run", "-d", "--name", "pooled", IMAGE, "sleep", "1000")
        assert started.returncode == 0, started.stderr
        executed = podman.run("exec", "pooled", "hostname")
        assert executed.returncode == 0, executed.stderr
        with monkeypatch.context() as default_run_dir:
            default_run_dir.delenv("VC_RUN_DIR")
            assert api.pod_status(started.stdout.strip()).vm_pid == standby.vm.pid
        assert podman.run("rm", "--force", "--time", "0", "pooled").returncode == 0
    finally:
        pool.set_pool_size(factory.root, 0)
        pool.stop(default_root, factory=factory.root)  # this test's only
        factory.destroy()
        shutil.rmtree(base, ignore_errors=True)
