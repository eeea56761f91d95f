"""What the agent answers: how a process ended, what runs, the guest, usage.

Plain values, shared by the agent interface, its implementations and the
pod daemon's calls, which pass them on to callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self


class Parsed(Protocol):
    """A result that reads itself from the fields of an answer (ValueError if it cannot)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Self: ...


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: ``exit_code`` is 128+N when killed by signal N.

    ``error`` says why, when the process did not end on its own terms but
    with its VM or its agent (the pod stopped, the VM died).
    """

    exit_code: int
    signal: int | None = None
    error: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Self:
        """The status in an answer; ValueError if a field has the wrong type."""
        code, signal, error = data.get("exit_code"), data.get("signal"), data.get("error")
        if (
            not isinstance(code, int)
            or not (signal is None or isinstance(signal, int))
            or not (error is None or isinstance(error, str))
        ):
            raise ValueError(f"malformed exit status {dict(data)!r}")
        return cls(code, signal, error)


@dataclass(frozen=True)
class GuestDetails:
    kernel: str
    agent_version: str
    python: str
    cpus: int
    memory_kib: int
    runtime: str


@dataclass(frozen=True)
class CloneInit:
    """What a clone's agent says once it is a pod of its own.

    ``resumed_random``: the first bytes the clone read from /dev/urandom as it
    resumed, before the host's seed: they differ between clones of one
    template only if the guest kernel reseeded itself on resume (its VM
    generation id changed).
    """

    RANDOM_BYTES: ClassVar[int] = 32

    reseeded: bool
    resumed_random: bytes

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Self:
        """The answer's fields; ValueError unless ``reseeded`` is a bool and
        ``resumed_random`` exactly RANDOM_BYTES in lowercase hex."""
        reseeded, sample = data.get("reseeded"), data.get("resumed_random")
        if not isinstance(reseeded, bool):
            raise ValueError(f"reseeded={reseeded!r}, expected a bool")
        if (
            not isinstance(sample, str)
            or len(sample) != 2 * cls.RANDOM_BYTES
            or sample.strip("0123456789abcdef")
        ):
            raise ValueError(
                f"resumed_random={str(sample)[:80]!r}, expected 64 lowercase hex digits"
            )
        return cls(reseeded, bytes.fromhex(sample))


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    args: tuple[str, ...]


@dataclass(frozen=True)
class ContainerStats:
    """A container's usage, read from its cgroup in the guest; limits are 0
    where there is none.  The network figures are the pod's, shared by all its
    containers.  These fields are also the agent's answer to container_stats,
    by name."""

    cpu_usage_ns: int
    cpu_user_ns: int
    cpu_system_ns: int
    memory_bytes: int
    memory_limit_bytes: int
    memory_cache_bytes: int
    pids: int
    pids_limit: int
    io_read_bytes: int
    io_write_bytes: int
    network_rx_bytes: int
    network_tx_bytes: int

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Self:
        """The figures of an answer (the guest's, or the daemon's); ValueError
        naming the first that is missing or not an integer in 0..2^63."""
        values = {}
        for name in cls.__dataclass_fields__:
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
                raise ValueError(f"{name}={value!r} is not a usage figure")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class KeptProcess:
    """A process the guest kept while no host was attached (``process_table``).

    ``exit`` is None while it runs; ``stdout``/``stderr`` name its detached
    output streams, which a reattached host resumes.
    """

    container_id: str | None
    exec_id: str | None
    pid: int
    exit: ExitStatus | None
    stdout: int | None
    stderr: int | None

    @property
    def streams(self) -> tuple[int, ...]:
        return tuple(s for s in (self.stdout, self.stderr) if s is not None)


@dataclass(frozen=True)
class GuestTable:
    """The guest's containers (id to status) and processes, for a reattaching host."""

    containers: dict[str, str]
    processes: tuple[KeptProcess, ...]

    def process(self, container_id: str | None, exec_id: str | None) -> KeptProcess | None:
        for process in self.processes:
            if (process.container_id, process.exec_id) == (container_id, exec_id):
                return process
        return None
