"""The fake QEMU (tests/unit/fake_qemu.py) as a binary the driver can run, and
the log of the QMP commands it was sent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit import fake_qemu


@pytest.fixture
def qmp_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "qmp.jsonl"
    monkeypatch.setenv("FAKE_QEMU_LOG", str(log))
    return log


@pytest.fixture
def fake_binary(tmp_path: Path, qmp_log: Path) -> Path:
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text(f"#!{sys.executable}\n" + Path(fake_qemu.__file__).read_text())
    binary.chmod(0o755)
    return binary
