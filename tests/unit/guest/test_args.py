"""Request validation: a bad argument is invalid, whatever the op."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.guest.harness import NEEDS_RUNC, AgentCallError, AgentClient

pytestmark = NEEDS_RUNC


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("ping", {"extra": 1}),
        ("no_such_op", {}),
        ("container_state", {}),
        ("container_state", {"container_id": "-bad"}),
        ("container_state", {"container_id": "a" * 65}),
        ("container_state", {"container_id": 7}),
        ("create_container", {"container_id": "x", "bundle": []}),
        ("create_container", {"container_id": "x", "bundle": {"root": {"path": "/"}}}),
        ("create_container", {"container_id": "x", "bundle": {"process": {"args": ["sh"]}}}),
        (
            "create_container",
            {"container_id": "x", "bundle": {"process": {"args": ["sh"]}, "root": "/"}},
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}, "root": {"path": "rel"}},
            },
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}, "root": {"path": "/\0"}},
            },
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}, "root": {"path": "/nowhere"}},
            },
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}, "root": {"path": "/"}},
                "rootfs": "/",
            },
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}, "root": {"path": "/"}},
                "stdout": 0,
            },
        ),
        (
            "create_container",
            {
                "container_id": "x",
                "bundle": {"process": {"args": ["sh"]}, "root": {"path": "/"}},
                "stdout": 5,
                "stderr": 5,
            },
        ),
        ("signal_process", {"container_id": "x", "signal": "KILL"}),
        ("signal_process", {"container_id": "x", "signal": True}),
        ("resize_terminal", {"container_id": "x", "rows": -1, "cols": 2}),
    ],
)
def test_bad_args_are_invalid(agent: AgentClient, op: str, args: dict[str, Any]) -> None:
    with pytest.raises(AgentCallError) as info:
        agent.call(op, **args)
    assert info.value.kind == "invalid", info.value.message
