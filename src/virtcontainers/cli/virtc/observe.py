"""virtc's views of what pods use: ``virtc metrics`` and ``virtc top``."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Iterable

import click
from rich.live import Live
from rich.table import Table

from virtcontainers.cli.virtc.common import stdout

MIB = 1 << 20


@click.command("metrics")
@click.option("--listen", metavar="ADDRESS:PORT", help="Serve them over HTTP until interrupted.")
def metrics(listen: str | None) -> None:
    """Prometheus metrics of every pod: host PSS and CPU, guest memory and CPU."""
    from virtcontainers.cli import metrics as collected

    if listen is None:
        click.echo(collected.exposition().decode(), nl=False)
        return
    address, _, port = listen.rpartition(":")
    if not address or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not ADDRESS:PORT", param_hint="--listen")
    collected.serve(address, int(port))
    click.echo(f"serving metrics on http://{listen}/metrics", err=True)
    ended = _signalled((signal.SIGINT, signal.SIGTERM))
    select.select([ended], [], [])


@click.command("top")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds.")
@click.option("--once", is_flag=True, help="Print one view and exit.")
def top(interval: float, once: bool) -> None:
    """A live view of pods and containers: their CPU and memory (Ctrl-C ends it)."""
    console = stdout
    sampler = _Sampler()
    if once:
        console.print(sampler.table())
        return
    # Ctrl-C (or SIGTERM) ends the view between two samples, never inside one.
    ended = _signalled((signal.SIGINT, signal.SIGTERM))
    with Live(sampler.table(), console=console, auto_refresh=False) as live:
        while not select.select([ended], [], [], interval)[0]:
            live.update(sampler.table(), refresh=True)


def _signalled(signums: Iterable[signal.Signals]) -> int:
    """A fd that turns readable once one of ``signums`` has arrived.

    Not a handler that sets a threading.Event: a handler runs in the main
    thread between two bytecodes, possibly while that thread holds the
    Event's lock inside wait(), and set() then waits for it forever.  The
    wakeup fd is written by the interpreter's C-level handler instead.
    """
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end)
    for signum in signums:
        signal.signal(signum, lambda *_: None)
    return read_end


class _Sampler:
    """Tables of what pods use; each shows the CPU used since the one before."""

    def __init__(self) -> None:
        self._cpu: dict[str, float] = {}
        self._at = time.monotonic()

    def table(self) -> Table:
        from virtcontainers.cli.metrics import collect

        now = time.monotonic()
        elapsed, self._at = now - self._at, now
        table = Table("POD / CONTAINER", "STATE", "CPU %", "HOST PSS", "GUEST MEMORY", "PIDS")
        for usage in collect():
            before = self._cpu.get(usage.pod.id)
            self._cpu[usage.pod.id] = usage.cpu_seconds
            share = "-" if before is None else f"{(usage.cpu_seconds - before) / elapsed:.1%}"
            pss = f"{usage.pss_bytes / MIB:.1f} MiB" if usage.vm else "-"
            table.add_row(usage.pod.id, usage.pod.state.value, share, pss, "", "")
            for container in usage.pod.containers:
                stats = usage.containers.get(container.id)
                memory = f"{stats.memory_bytes / MIB:.1f} MiB" if stats else "-"
                pids = str(stats.pids) if stats else "-"
                table.add_row(f"  {container.id}", container.state.value, "", "", memory, pids)
        return table


@click.command("events")
@click.argument("pod_id")
@click.option("--follow", "-f", is_flag=True, help="Wait for more until the pod stops.")
def pod_events(pod_id: str, follow: bool) -> None:
    """The pod's events (start, exit, oom, paused, resumed, stopped), one JSON per line."""
    from virtcontainers import api

    events = api.follow_events(pod_id) if follow else iter(api.pod_events(pod_id, timeout=0))
    for event in events:
        click.echo(json.dumps(event.to_dict()))
