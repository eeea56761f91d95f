"""What the agent keeps track of: a container's OOM kill count."""

from __future__ import annotations

from pathlib import Path


def test_oom_counter_parsing(tmp_path: Path) -> None:
    from virtcontainers.guest.agent.model import Container

    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    container = Container("c", str(tmp_path))
    assert container.read_oom_kills() == 0  # no cgroup known
    container.memory_events = str(events)
    assert container.read_oom_kills() == 2
    events.unlink()
    container.oom_kills = 2
    assert container.read_oom_kills() == 2  # unreadable: keep the last count
