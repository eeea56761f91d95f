"""vc-runtime's usage errors end as runc's do: exit status 1, and a line in --log."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from virtcontainers.cli.runtime.main import cli


@pytest.mark.parametrize(
    "args",
    [
        ["state", "-x"],
        ["delete", "--force", "-x"],
        ["kill", "-x", "KILL"],
        ["create", "--bundle", ".", "-x"],
        ["state"],
        ["no-such-command"],
    ],
)
def test_a_bad_id_or_usage_exits_1_and_is_logged(tmp_path: Path, args: list[str]) -> None:
    log = tmp_path / "log.json"
    result = CliRunner().invoke(
        cli, ["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json", *args]
    )
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output
    assert '"level": "error"' in log.read_text()


def test_a_bad_global_option_exits_1() -> None:
    result = CliRunner().invoke(cli, ["--no-such-option", "state", "c"])
    assert result.exit_code == 1, result.output
    assert "No such option" in result.output
