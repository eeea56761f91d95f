"""virtc's views of what pods use: ``virtc metrics`` and ``virtc top``."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time

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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()


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
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Live(sampler.table(), console=console, auto_refresh=False) as live:
        while not stop.wait(interval):
            live.update(sampler.table(), refresh=True)


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
