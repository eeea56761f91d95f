"""vc-runtime exec: the Cmd it makes from its flags or from a process file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtcontainers.cli.runtime.exec import _exec_cmd
from virtcontainers.config import DEFAULT_PATH_ENV, Cmd, User
from virtcontainers.errors import ConfigError


def test_flags_make_the_cmd_and_the_user_is_parsed_once() -> None:
    cmd = _exec_cmd(None, ("ps",), True, "/tmp", ("A=1",), "1000:10")
    assert cmd == Cmd(
        ("ps",), env=(DEFAULT_PATH_ENV, "A=1"), cwd="/tmp", user=User(1000, 10), terminal=True
    )
    assert _exec_cmd(None, ("ps",), False, None, (), None).user == User()


def test_a_user_that_is_not_numeric_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        _exec_cmd(None, ("ps",), False, None, (), "root")
    assert caught.value.field == "cmd.user"


def test_a_process_file_makes_the_cmd(tmp_path: Path) -> None:
    process = {"args": ["id"], "cwd": "/", "user": {"uid": 7, "gid": 8, "additionalGids": [9]}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    cmd = _exec_cmd(tmp_path / "process.json", (), False, None, (), None)
    assert (cmd.args, cmd.user) == (("id",), User(7, 8, (9,)))
