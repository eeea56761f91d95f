"""What pods cost the host, and what their containers use: for metrics and ``virtc top``.

Host figures come from /proc: each pod's QEMU and daemon, their proportional
set size (PSS, so that pages shared between pods are split between them) and
CPU time.  Container figures come from the guest (``container_stats``).
Prometheus metrics are made from the same figures at every scrape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from virtcontainers import api
from virtcontainers.agent.results import ContainerStats
from virtcontainers.errors import VcError
from virtcontainers.host.proc import ProcessUsage, process_usage
from virtcontainers.states import ContainerState, PodState


@dataclass(frozen=True)
class PodUsage:
    pod: api.PodStatus
    vm: ProcessUsage | None
    daemon: ProcessUsage | None
    containers: dict[str, ContainerStats] = field(default_factory=dict)

    @property
    def pss_bytes(self) -> int:
        return sum(p.pss_bytes for p in (self.vm, self.daemon) if p is not None)

    @property
    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds for p in (self.vm, self.daemon) if p is not None)


def pod_usage(pod: api.PodStatus) -> PodUsage:
    containers = {}
    if pod.state is PodState.RUNNING:
        for container in pod.containers:
            if container.state in (ContainerState.RUNNING, ContainerState.PAUSED):
                with contextlib.suppress(VcError):  # it may stop meanwhile
                    containers[container.id] = api.container_stats(pod.id, container.id)
    return PodUsage(pod, process_usage(pod.vm_pid), process_usage(pod.daemon_pid), containers)


def collect() -> list[PodUsage]:
    return [pod_usage(pod) for pod in api.list_pods()]


class PodCollector(Collector):
    """Prometheus metrics of every pod on this host, read at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        usages = collect()
        pods = GaugeMetricFamily("vc_pods", "Pods on this host, by state", labels=["state"])
        for state in PodState:
            pods.add_metric([state.value], sum(1 for u in usages if u.pod.state is state))
        yield pods
        yield from _host_families(usages)
        yield from _container_families(usages)


def _host_families(usages: list[PodUsage]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    pss = GaugeMetricFamily(
        "vc_pod_pss_bytes", "Host PSS of a pod's processes", labels=["pod", "process"]
    )
    cpu = CounterMetricFamily(
        "vc_pod_cpu_seconds", "Host CPU time of a pod's processes", labels=["pod", "process"]
    )
    for usage in usages:
        for name, process in (("qemu", usage.vm), ("daemon", usage.daemon)):
            if process is not None:
                pss.add_metric([usage.pod.id, name], process.pss_bytes)
                cpu.add_metric([usage.pod.id, name], process.cpu_seconds)
    total = GaugeMetricFamily("vc_host_pss_bytes", "Host PSS of every pod's processes")
    total.add_metric([], sum(u.pss_bytes for u in usages))
    yield from (pss, cpu, total)


def _container_families(
    usages: list[PodUsage],
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    labels = ["pod", "container"]
    memory = GaugeMetricFamily("vc_container_memory_bytes", "Guest memory in use", labels=labels)
    cpu = CounterMetricFamily("vc_container_cpu_seconds", "Guest CPU time", labels=labels)
    pids = GaugeMetricFamily("vc_container_pids", "Processes in the container", labels=labels)
    for usage in usages:
        for container_id, stats in usage.containers.items():
            memory.add_metric([usage.pod.id, container_id], stats.memory_bytes)
            cpu.add_metric([usage.pod.id, container_id], stats.cpu_usage_ns / 1e9)
            pids.add_metric([usage.pod.id, container_id], stats.pids)
    yield from (memory, cpu, pids)


def registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PodCollector())
    return registry


def exposition() -> bytes:
    """The metrics, in Prometheus's text format."""
    return generate_latest(registry())


def serve(address: str, port: int) -> None:
    """Serve the metrics over HTTP on ``address:port`` from a background thread."""
    start_http_server(port, address, registry())
