"""podman (Debian's) running containers through vc-runtime, each in a VM."""

from __future__ import annotations

import pytest

from tests.conftest import shell_session_in_pty
from tests.engines.conftest import IMAGE, Podman
from virtcontainers import api

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
