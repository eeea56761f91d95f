"""The guest agent's block-volume helpers, against a stand-in /sys/block."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtcontainers.guest.agent.ops import blocks as op_blocks


def test_a_disk_is_found_by_its_serial_and_a_stranger_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, serial in (("vda", None), ("vdb", "vol1\n"), ("vdc", "vol2\n")):
        (tmp_path / name).mkdir()
        if serial is not None:
            (tmp_path / name / "serial").write_text(serial)
    monkeypatch.setattr(op_blocks, "SYS_BLOCK", str(tmp_path))
    assert op_blocks.find_disk("vol2") == "vdc"
    assert op_blocks.find_disk("vol3") is None
    monkeypatch.setattr(op_blocks, "SYS_BLOCK", str(tmp_path / "missing"))
    assert op_blocks.find_disk("vol1") is None
