"""The CLIs' argument handling and error reporting (no VM needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from virtcontainers import api
from virtcontainers.cli.runtime.control import parse_signal as runtime_signal
from virtcontainers.cli.runtime.main import cli as runtime_cli
from virtcontainers.cli.virtc import common
from virtcontainers.cli.virtc.main import cli as virtc_cli
from virtcontainers.config import PodConfig
from virtcontainers.errors import ConfigError


def test_virtc_rejects_a_bad_pod_id(run_root: Path) -> None:
    result = CliRunner().invoke(virtc_cli, ["pod", "create", "bad id!"])
    assert result.exit_code == 1
    assert "invalid pod id" in result.output


def test_virtc_reports_an_unknown_pod(run_root: Path) -> None:
    result = CliRunner().invoke(virtc_cli, ["pod", "status", "ghost"])
    assert result.exit_code == 1
    assert "pod 'ghost' not found" in result.output


def test_virtc_refuses_an_impossible_memory_size(run_root: Path) -> None:
    result = CliRunner().invoke(virtc_cli, ["pod", "create", "p", "--memory", "1"])
    assert result.exit_code == 1
    assert "resources.memory_mib" in result.output
    assert not (run_root / "pods" / "p").exists()


def test_virtc_pod_lifecycle_without_a_vm(run_root: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(virtc_cli, ["pod", "create", "p1"]).exit_code == 0
    listed = runner.invoke(virtc_cli, ["pod", "list", "--json"])
    assert '"id": "p1"' in listed.output and '"state": "created"' in listed.output
    assert runner.invoke(virtc_cli, ["pod", "delete", "p1"]).exit_code == 0
    assert runner.invoke(virtc_cli, ["pod", "list", "--json"]).output.strip() == "[]"


def test_virtc_volume_syntax_is_checked(run_root: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        virtc_cli,
        ["container", "create", "p", "c", "--rootfs", str(tmp_path), "-v", "nocolon", "sh"],
    )
    assert result.exit_code == 2
    assert "HOST:CONTAINER" in result.output


def test_runtime_signal_names_and_numbers() -> None:
    assert runtime_signal("KILL") == runtime_signal("SIGKILL") == runtime_signal("9") == 9
    assert runtime_signal("term") == 15


def test_runtime_unknown_signal_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    args = ["--root", str(tmp_path), "--log", str(log), "kill", "nope", "SIGBOGUS"]
    result = CliRunner().invoke(runtime_cli, args)
    assert result.exit_code == 1
    assert "SIGBOGUS" in log.read_text() and "does not exist" not in log.read_text()


def test_runtime_logs_errors_as_json(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    args = ["--root", str(tmp_path), "--log", str(log), "--log-format", "json", "state", "nope"]
    result = CliRunner().invoke(runtime_cli, args)
    assert result.exit_code == 1
    assert '"level": "error"' in log.read_text()
    assert "container nope does not exist" in log.read_text()


def test_runtime_root_that_is_not_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    for root in (afile, Path("/proc/no-such-dir")):
        result = CliRunner().invoke(runtime_cli, ["--root", str(root), "list"])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert f"--root {root}: cannot use it as the state directory" in result.output


def test_runtime_refuses_a_config_nested_too_deeply(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    args = ["--root", str(tmp_path / "root"), "create", "--bundle", str(bundle), "deep"]
    result = CliRunner().invoke(runtime_cli, args)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "nested too deeply" in result.output


def test_virtc_run_refuses_an_empty_name(run_root: Path) -> None:
    result = CliRunner().invoke(virtc_cli, ["run", "--name", "", "--", "true"])
    assert result.exit_code == 125
    assert "invalid pod id" in result.output


def test_a_run_dir_too_long_for_sockets_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_root = tmp_path / ("r" * 90)
    monkeypatch.setenv("VC_RUN_DIR", str(long_root))
    with pytest.raises(ConfigError) as caught:
        api.create_pod(PodConfig(id="p", hypervisor="mock"))
    assert caught.value.field == "VC_RUN_DIR" and str(long_root) in str(caught.value)
    assert not (long_root / "pods" / "p").exists()


def test_virtc_prints_data_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """A MAC with ":ab:" in it once came out as "02🆎cd:..." (rich's emoji codes)."""
    common.stdout.print("eth1 02:ab:cd:00:11:22 [not a style]")
    common.progress("copying /srv/[x]/:cd:")
    with pytest.raises(SystemExit):
        common.fail("no file /a/[bold]b[/] :ab:")
    out, err = capsys.readouterr()
    assert "eth1 02:ab:cd:00:11:22 [not a style]" in out
    assert "» copying /srv/[x]/:cd:" in err
    assert "virtc: error: no file /a/[bold]b[/] :ab:" in err


def test_virtc_forward_loopback_needs_a_netns(run_root: Path) -> None:
    result = CliRunner().invoke(virtc_cli, ["pod", "create", "p", "--forward-loopback"])
    assert result.exit_code == 1
    assert "pod.forward_loopback" in result.output and "netns" in result.output
    assert not (run_root / "pods" / "p").exists()
