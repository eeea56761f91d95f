"""Operations on containers: create, start, pause, resume, state, list, remove."""

from __future__ import annotations

import json
import os

from ..args import AgentError, arg_id, arg_streams, check_keys, check_process, invalid
from ..model import Container, Process
from ..osutil import read_text, rmtree, write_file
from ..runtime import Launch
from ..wire import ERROR_LIMIT, protocol

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from virtcontainers.agent.messages import ProcessEntry

    from ..args import CheckedProcess
    from ..core import Agent
    from ..model import Reply
    from ..runtime import RuntimeCall

_STATUSES = ("created", "running", "paused", "stopped")


def create_container(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(
        args,
        {"container_id", "bundle", "stdin", "stdout", "stderr"},
        {"container_id", "bundle"},
    )
    cid = arg_id(args, "container_id")
    config, process, rootfs = _check_bundle(args)
    streams = arg_streams(args)
    if cid in agent.containers:
        raise AgentError("exists", f"container {cid!r} already exists")
    if not os.path.isdir(rootfs):
        raise invalid(f"bundle.root.path {rootfs} is not a directory")
    agent.claim_streams(streams)
    bundle_dir = os.path.join(agent.bundles, cid)
    try:
        _write_bundle(bundle_dir, config)
    except OSError as exc:
        agent.release_streams(streams)
        rmtree(bundle_dir)
        raise AgentError("internal", f"cannot write bundle: {exc}") from None
    container = Container(cid, bundle_dir)
    container.env = list(process.env)
    proc = Process(agent, container, None, process.terminal, streams)
    agent.containers[cid] = container
    pid_file = os.path.join(bundle_dir, "init.pid")

    def on_ok(pid: int) -> None:
        container.init = proc
        container.status = "created"
        _find_cgroup(container, pid)

    def on_fail() -> None:
        agent.containers.pop(cid, None)
        rmtree(bundle_dir)

    Launch(
        agent,
        reply,
        proc,
        args=["create", "--bundle", bundle_dir, "--pid-file", pid_file, cid],
        pid_file=pid_file,
        log_file=os.path.join(bundle_dir, "runtime.log"),
        on_ok=on_ok,
        on_fail=on_fail,
    )


def _check_bundle(args: Mapping[str, object]) -> tuple[dict[str, object], CheckedProcess, str]:
    """(config.json for the runtime, bundle.process, bundle.root.path) of a
    create_container request, checked."""
    bundle = args["bundle"]
    if not isinstance(bundle, dict):
        raise invalid("bundle must be an OCI runtime-spec object")
    root = bundle.get("root")
    if not isinstance(root, dict):
        raise invalid("bundle.root must be an object")
    rootfs = root.get("path")
    if not isinstance(rootfs, str) or not rootfs.startswith("/") or "\0" in rootfs:
        raise invalid("bundle.root.path must be an absolute path")
    process = check_process(bundle.get("process"), "bundle.process")
    _check_cpuset(bundle)
    return bundle, process, rootfs


def _check_cpuset(bundle: Mapping[str, object]) -> None:
    """Refuse a cpuset naming CPUs this VM lacks (crun would only say "Numerical
    result out of range"); a malformed one is left to crun to report."""
    linux = bundle.get("linux")
    resources = linux.get("resources") if isinstance(linux, dict) else None
    cpu = resources.get("cpu") if isinstance(resources, dict) else None
    wanted = _cpu_list(cpu.get("cpus")) if isinstance(cpu, dict) else None
    if not wanted:
        return
    try:
        text = read_text("/sys/devices/system/cpu/online", 4096).strip()
    except OSError:
        return
    online = _cpu_list(text) or set()
    missing = sorted(wanted - online)
    if missing:
        raise invalid(
            f"linux.resources.cpu.cpus names CPU {missing[0]}, which this VM does not have "
            f"(its CPUs: {text})"
        )


def _cpu_list(value: object) -> set[int] | None:
    """The CPUs of a list such as ``0-3,6``; None if it is not one."""
    if not isinstance(value, str) or len(value) > 4096:
        return None
    cpus: set[int] = set()
    for item in value.split(","):
        first, dash, last = item.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            return None
        low, high = int(first), int(last) if dash else int(first)
        if high < low or high > 8191:
            return None
        cpus.update(range(low, high + 1))
    return cpus


def _write_bundle(bundle_dir: str, config: dict[str, object]) -> None:
    rmtree(bundle_dir)  # a leftover of an earlier agent run
    os.makedirs(bundle_dir, mode=0o700)
    write_file(os.path.join(bundle_dir, "config.json"), json.dumps(config).encode())


def _find_cgroup(container: Container, pid: int) -> None:
    try:
        for line in read_text(f"/proc/{pid}/cgroup").splitlines():
            if line.startswith("0::"):
                path = "/sys/fs/cgroup" + line[3:].rstrip("/") + "/memory.events"
                if os.path.exists(path):
                    container.memory_events = path
                    container.oom_kills = container.read_oom_kills()
                return
    except OSError:
        pass


def start_container(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id"}, {"container_id"})
    container = agent.container(args)
    if container.status != "created" or container.busy:
        raise AgentError("state", f"container {container.id!r} is {container.status}")

    def on_ok(call: RuntimeCall) -> None:
        if container.status == "created":
            container.status = "running"
        reply.ok({})

    agent.run_busy(container, reply, ["start", container.id], on_ok)


def list_processes(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id"}, {"container_id"})
    container = agent.container(args)
    if container.status == "creating":
        raise AgentError("state", f"container {container.id!r} is being created")

    def on_ok(call: RuntimeCall) -> None:
        try:
            pids = json.loads(call.out.decode() or "[]")
        except ValueError:
            raise AgentError("runtime", "runtime ps printed invalid JSON") from None
        if not isinstance(pids, list):
            raise AgentError("runtime", "runtime ps did not print a list")
        processes: list[ProcessEntry] = []
        budget = protocol.MAX_PAYLOAD // 2  # keep the answer within one frame
        for pid in pids:
            if not isinstance(pid, int) or isinstance(pid, bool):
                continue
            try:
                cmdline = read_text(f"/proc/{pid}/cmdline", ERROR_LIMIT)
            except OSError:
                continue  # exited meanwhile
            budget -= len(cmdline) + 32
            if budget < 0:
                break
            args = cmdline.rstrip("\0").split("\0") if cmdline else []
            processes.append({"pid": pid, "args": args})
        reply.ok({"processes": processes})

    agent.run_runtime(reply, ["ps", "--format", "json", container.id], on_ok)


def pause_container(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    _pause_resume(agent, reply, args, "pause", "running", "paused")


def resume_container(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    _pause_resume(agent, reply, args, "resume", "paused", "running")


def _pause_resume(
    agent: Agent, reply: Reply, args: Mapping[str, object], command: str, before: str, after: str
) -> None:
    check_keys(args, {"container_id"}, {"container_id"})
    container = agent.container(args)
    if container.status != before or container.busy:
        raise AgentError("state", f"container {container.id!r} is {container.status}")

    def on_ok(call: RuntimeCall) -> None:
        if container.status == before:
            container.status = after
        reply.ok({})

    agent.run_busy(container, reply, [command, container.id], on_ok)


def container_state(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id"}, {"container_id"})
    container = agent.container(args)
    if container.status not in _STATUSES:
        raise AgentError("state", f"container {container.id!r} is being created")
    pid = container.init.pid if container.init is not None else None
    reply.ok({"status": container.status, "pid": pid})


def remove_container(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, {"container_id"}, {"container_id"})
    container = agent.container(args)
    if container.status == "creating" or container.busy:
        raise AgentError("state", f"container {container.id!r} is busy")

    def finish() -> None:
        if agent.containers.get(container.id) is not container:
            return
        for proc in container.processes():
            waiters, proc.waiters = proc.waiters, []
            for waiter in waiters:
                waiter.error("not_found", f"container {container.id!r} was removed")
            proc.close()
        del agent.containers[container.id]
        rmtree(container.bundle_dir)
        reply.ok({})

    def on_deleted(call: RuntimeCall) -> None:
        # delete --force killed the processes: report their exits first.
        if all(proc.reported or proc.pid is None for proc in container.processes()):
            finish()
            return
        container.after_exits.append(check)
        agent.loop.call_later(2.0, finish)

    def check() -> None:
        if all(proc.reported or proc.pid is None for proc in container.processes()):
            finish()
        else:
            container.after_exits.append(check)

    agent.run_busy(container, reply, ["delete", "--force", container.id], on_deleted)
