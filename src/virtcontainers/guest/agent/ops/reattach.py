"""Operations for a host that reattaches after its predecessor went away:
the table of containers and processes the guest kept, and taking their
detached output streams again."""

from __future__ import annotations

from ..args import check_keys, invalid

TYPE_CHECKING = False  # typing costs ~50 ms at every guest boot under TCG: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping

    from virtcontainers.agent.messages import TableContainer, TableProcess

    from ..core import Agent
    from ..model import Container, Process, Reply

MAX_RESUMED = 4096


def process_table(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    check_keys(args, set(), set())
    containers: list[TableContainer] = []
    processes: list[TableProcess] = []
    for container in agent.containers.values():
        containers.append({"id": container.id, "status": container.status})
        processes.extend(_entry(agent, container, proc) for proc in container.processes())
    processes.extend(_entry(agent, agent.guest, proc) for proc in agent.guest.execs.values())
    reply.ok({"containers": containers, "processes": processes})


def _entry(agent: Agent, container: Container, proc: Process) -> TableProcess:
    _stdin, stdout, stderr = proc.streams
    code, sig = proc.status if proc.status is not None else (None, None)
    return {
        "container_id": container.id or None,
        "exec_id": proc.exec_id,
        "pid": proc.pid,
        "exit_code": code,
        "signal": sig,
        "stdout": stdout if stdout in agent.detached else None,
        "stderr": stderr if stderr in agent.detached else None,
    }


def resume_output(agent: Agent, reply: Reply, args: Mapping[str, object]) -> None:
    """Answer first, then send: the host binds the ids when it reads the answer."""
    check_keys(args, {"streams"}, {"streams"})
    ids = args["streams"]
    if not isinstance(ids, list) or len(ids) > MAX_RESUMED:
        raise invalid(f"streams must be a list of at most {MAX_RESUMED} ids")
    streams = []
    for stream_id in ids:
        out = agent.detached.get(stream_id) if isinstance(stream_id, int) else None
        if out is None:
            raise invalid(f"stream {stream_id!r} is not a detached output stream")
        streams.append(out)
    reply.ok({})
    for out in streams:
        out.resume()
