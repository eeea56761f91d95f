"""A container's log file is rotated at its cap, one rotated file kept."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from virtcontainers.pod.sinks import ContainerLog

CAP = 1000


def test_writes_past_the_cap_rotate_the_log_and_keep_one_old_file(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as executor:
        log = ContainerLog(tmp_path / "logs", "c1", CAP, executor)
        fd = log.fd

        async def flood() -> None:
            for n in range(100):
                await log.write(b"%03d" % n + b"x" * 97)  # 100 bytes each

        asyncio.run(flood())
        stdio = log.stdio()
        assert (stdio.stdout, stdio.stderr) == (fd, fd)
        stdio.close()
    current = (tmp_path / "logs" / "c1.log").read_bytes()
    rotated = (tmp_path / "logs" / "c1.log.1").read_bytes()
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["c1.log", "c1.log.1"]
    assert len(current) == len(rotated) == CAP
    assert rotated[:3] == b"080" and current[:3] == b"090" and current[-100:-97] == b"099"


def test_a_log_reopened_appends_and_counts_what_it_had(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "c1.log").write_bytes(b"y" * (CAP - 10))
    with ThreadPoolExecutor(1) as executor:
        log = ContainerLog(tmp_path / "logs", "c1", CAP, executor)
        asyncio.run(log.write(b"z" * 20))
        log.stdio().close()
    assert (tmp_path / "logs" / "c1.log.1").read_bytes() == b"y" * (CAP - 10)
    assert (tmp_path / "logs" / "c1.log").read_bytes() == b"z" * 20
