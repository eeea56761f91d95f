"""The host and the guest agent serve the same operations, declared once.

The op names live in protocol.py (shared with the guest); the host's table
(contract.py) pairs each with its argument and result types, and the guest's
dispatch table (guest/agent/ops) with its handler.  An op missing from either
table, or known to one side only, fails here rather than as "unknown op" in a
VM.
"""

from __future__ import annotations

import typing

from virtcontainers.agent import messages
from virtcontainers.agent.contract import CONTRACT
from virtcontainers.agent.protocol import Op
from virtcontainers.guest.agent.ops import HANDLERS


def op_names() -> set[str]:
    return {value for name, value in vars(Op).items() if name.isupper()}


def test_each_op_name_is_its_constant_s_name() -> None:
    constants = {name: value for name, value in vars(Op).items() if name.isupper()}
    assert constants == {value.upper(): value for value in constants.values()}


def test_the_host_declares_every_op_and_no_other() -> None:
    assert set(CONTRACT) == op_names()


def test_the_guest_handles_every_op_and_no_other() -> None:
    assert set(HANDLERS) == op_names()


def test_host_and_guest_tables_agree() -> None:
    assert sorted(CONTRACT) == sorted(HANDLERS)


def test_each_op_is_filed_under_its_own_name() -> None:
    for name, agent_op in CONTRACT.items():
        assert agent_op.name == name


def test_arguments_and_results_are_declared_messages() -> None:
    declared = [value for name, value in vars(messages).items() if not name.startswith("_")]
    for agent_op in CONTRACT.values():
        assert typing.is_typeddict(agent_op.args), agent_op
        assert any(agent_op.args is value for value in declared), agent_op
        assert any(agent_op.result is value for value in declared), agent_op


def test_every_guest_handler_is_callable() -> None:
    assert all(callable(handler) for handler in HANDLERS.values())
