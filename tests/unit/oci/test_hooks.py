"""virtcontainers.oci.run_hooks: OCI hooks run on the host with the state on stdin."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci import run_hooks

STATE = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242, "bundle": "/b"}


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_hook_gets_state_args_and_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook = script(
        tmp_path,
        "record.sh",
        f'cat > {out}.stdin\necho "$1 $2 X=$X HOME=${{HOME-unset}}" > {out}.argv\n',
    )
    spec: dict[str, Any] = {
        "hooks": {
            "createRuntime": [
                {"path": hook, "args": ["my-hook", "one", "two"], "env": ["X=42"], "timeout": 5}
            ]
        }
    }
    run_hooks(spec, "createRuntime", STATE)
    assert json.loads(Path(f"{out}.stdin").read_text()) == STATE
    assert Path(f"{out}.argv").read_text() == "one two X=42 HOME=unset\n"


def test_hook_argv0_is_args0_and_env_inherited_without_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("VC_HOOK_TEST", "inherited")
    body = f'echo "$0 $VC_HOOK_TEST" > {out}'
    run_hooks({"hooks": {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", body, "my-hook"]}]}},
              "prestart", STATE)  # fmt: skip
    assert out.read_text() == "my-hook inherited\n"


def test_hooks_run_in_order_and_only_their_stage(tmp_path: Path) -> None:
    log = tmp_path / "log"
    first = script(tmp_path, "a.sh", f"echo a >> {log}\n")
    second = script(tmp_path, "b.sh", f"echo b >> {log}\n")
    other = script(tmp_path, "c.sh", f"echo c >> {log}\n")
    spec = {
        "hooks": {
            "prestart": [{"path": first}, {"path": second}],
            "poststart": [{"path": other}],
        }
    }
    run_hooks(spec, "prestart", STATE)
    assert log.read_text() == "a\nb\n"
    run_hooks(spec, "startContainer", STATE)  # none for this stage
    run_hooks({}, "poststop", STATE)
    assert log.read_text() == "a\nb\n"


def test_failing_hook_raises_and_stops(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = script(tmp_path, "bad.sh", "echo 'no network for you' >&2\nexit 3\n")
    after = script(tmp_path, "after.sh", f"touch {marker}\n")
    spec = {"hooks": {"createContainer": [{"path": bad}, {"path": after}]}}
    with pytest.raises(RuntimeSpecError) as info:
        run_hooks(spec, "createContainer", STATE)
    assert str(info.value) == (
        f"config.json: hooks.createContainer[0]: hook {bad} exited with status 3; "
        "output: no network for you"
    )
    assert not marker.exists()


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs once a SIGKILL sent to it has had time to land."""
    for _ in range(500):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.01)  # SIGKILL is delivered asynchronously
    return True


def test_hook_timeout_kills_it(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    slow = script(tmp_path, "slow.sh", f"sleep 30 &\necho $! > {child}\nsleep 30\n")
    spec = {"hooks": {"prestart": [{"path": slow, "timeout": 1}]}}
    with pytest.raises(RuntimeSpecError) as info:
        run_hooks(spec, "prestart", STATE)
    assert not _running(int(child.read_text())), "the hook's background child outlived it"
    assert str(info.value) == (
        f"config.json: hooks.prestart[0]: hook {slow} timed out after 1 s and was killed"
    )


def test_missing_hook_binary(tmp_path: Path) -> None:
    spec = {"hooks": {"startContainer": [{"path": str(tmp_path / "nope")}]}}
    with pytest.raises(RuntimeSpecError) as info:
        run_hooks(spec, "startContainer", STATE)
    assert str(info.value) == (
        f"config.json: hooks.startContainer[0]: cannot run hook {tmp_path}/nope: "
        "No such file or directory"
    )


@pytest.mark.parametrize("stage", ["poststart", "poststop"])
def test_post_hook_failures_are_warnings(
    tmp_path: Path, stage: str, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran"
    bad = script(tmp_path, "bad.sh", "exit 1\n")
    after = script(tmp_path, "after.sh", f"cat > {marker}\n")
    spec = {"hooks": {stage: [{"path": bad}, {"path": after}]}}
    with caplog.at_level(logging.WARNING, logger="virtcontainers.oci"):
        run_hooks(spec, stage, STATE)
    assert json.loads(marker.read_text()) == STATE  # the next hook still ran
    assert f"hooks.{stage}[0]: hook {bad} exited with status 1" in caplog.text


def test_unknown_stage() -> None:
    with pytest.raises(RuntimeSpecError, match="unknown hook stage 'prestop'"):
        run_hooks({}, "prestop", STATE)


def test_invalid_hook_in_spec() -> None:
    with pytest.raises(RuntimeSpecError) as info:
        run_hooks({"hooks": {"poststop": [{"args": ["x"]}]}}, "poststop", STATE)
    assert str(info.value) == "config.json: hooks.poststop[0].path: must be a string, got null"


def test_hook_that_ignores_stdin(tmp_path: Path) -> None:
    """A hook that exits without reading a large state must not fail the stage."""
    ran = tmp_path / "ran"
    quick = script(tmp_path, "quick.sh", f"touch {ran}\nexit 0\n")
    big = {**STATE, "annotations": {f"k{i}": "v" * 100 for i in range(2000)}}
    run_hooks({"hooks": {"prestart": [{"path": quick}]}}, "prestart", big)
    assert ran.exists()
