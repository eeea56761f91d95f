"""OCI hooks, run on the host by the runtime (never in the guest).

The guest spec has no ``hooks``: the runtime calls :func:`run_hooks` at each
lifecycle stage.  Hooks get the container's state JSON on stdin, run with the
given argv and environment (the runtime's environment when ``env`` is absent,
as runc does), and are killed when their ``timeout`` expires.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from virtcontainers.errors import RuntimeSpecError
from virtcontainers.oci._json import Loc, integer, obj, obj_list, str_list, string

log = logging.getLogger("virtcontainers.oci")

STAGES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
#: Stages whose failures the runtime-spec makes warnings (runtime.md, lifecycle).
WARN_ONLY_STAGES = frozenset({"poststart", "poststop"})
_OUTPUT_TAIL = 2000


def _validate_hook(hook: Mapping[str, Any], loc: Loc) -> None:
    path = string(hook.get("path"), loc.key("path"))
    if not path.startswith("/"):
        raise loc.key("path").error(f"must be an absolute path, got {path!r}")
    if hook.get("args") is not None:
        str_list(hook["args"], loc.key("args"))
    if hook.get("env") is not None:
        for i, entry in enumerate(str_list(hook["env"], loc.key("env"))):
            if "=" not in entry:
                raise loc.key("env").index(i).error(f"must be NAME=VALUE, got {entry!r}")
    if hook.get("timeout") is not None:
        integer(hook["timeout"], loc.key("timeout"), minimum=1)


def validate_hooks(spec: Mapping[str, Any], loc: Loc) -> None:
    """Check the shape of ``spec["hooks"]`` (unknown stages are refused)."""
    if spec.get("hooks") is None:
        return
    where = loc.key("hooks")
    hooks = obj(spec["hooks"], where)
    for stage, entries in hooks.items():
        if stage not in STAGES:
            raise where.key(stage).error(f"unknown hook stage (known: {', '.join(STAGES)})")
        if entries is None:
            continue
        for i, hook in enumerate(obj_list(entries, where.key(stage))):
            _validate_hook(hook, where.key(stage).index(i))


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text[-_OUTPUT_TAIL:]


def _run_one(hook: Mapping[str, Any], loc: Loc, stdin: bytes) -> None:
    path = hook["path"]
    argv = list(hook.get("args") or []) or [path]
    env = None if hook.get("env") is None else dict(e.split("=", 1) for e in hook["env"])
    timeout = hook.get("timeout")
    try:
        proc = subprocess.Popen(
            argv,
            executable=path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # so a timeout kills the hook's children too
        )
    except OSError as error:
        raise loc.error(f"cannot run hook {path}: {error.strerror or error}") from None
    try:
        output, _ = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise loc.error(
            f"hook {path} timed out after {timeout} s and was killed" + _fmt_output(output)
        ) from None
    if proc.returncode != 0:
        status = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        raise loc.error(f"hook {path} {status}" + _fmt_output(output))


def _fmt_output(output: bytes) -> str:
    tail = _tail(output)
    return f"; output: {tail}" if tail else ""


def run_hooks(spec: Mapping[str, Any], stage: str, state: Mapping[str, object]) -> None:
    """Run the hooks of ``stage`` on the host, in order, with ``state`` as JSON on stdin.

    A failing (non-zero, signalled, timed out, not executable) hook raises
    :class:`RuntimeSpecError` and the remaining hooks of the stage are not run;
    for ``poststart`` and ``poststop`` a failure is logged as a warning and the
    remaining hooks still run, as the runtime-spec requires.
    """
    if stage not in STAGES:
        raise RuntimeSpecError(f"unknown hook stage {stage!r} (known: {', '.join(STAGES)})")
    loc = Loc("config.json")
    validate_hooks(spec, loc)
    entries = (spec.get("hooks") or {}).get(stage) or []
    stdin = json.dumps(dict(state)).encode()
    for i, hook in enumerate(entries):
        try:
            _run_one(hook, loc.key("hooks").key(stage).index(i), stdin)
        except RuntimeSpecError as error:
            if stage not in WARN_ONLY_STAGES:
                raise
            log.warning("%s (ignored: %s hook failures are warnings)", error, stage)
