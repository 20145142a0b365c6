"""The sandbox state machine (domain/lifecycle.py): every operation from every state."""

from __future__ import annotations

import pytest

from workspace_server.api.errors import http_status
from workspace_server.domain.errors import InvalidStateTransition
from workspace_server.domain.lifecycle import RULES, Operation, check
from workspace_server.domain.models import SandboxState as S

EXPECTED = {
    Operation.PAUSE: ({S.RUNNING}, {S.PAUSED}),
    Operation.RESUME: ({S.PAUSED}, {S.RUNNING}),
    Operation.STOP: ({S.RUNNING, S.PAUSED}, {S.STOPPED}),
    Operation.START: ({S.STOPPED}, {S.RUNNING}),
    Operation.FORK: ({S.RUNNING, S.PAUSED, S.STOPPED}, set()),
}


@pytest.mark.parametrize("operation", list(Operation))
@pytest.mark.parametrize("state", list(S))
def test_every_operation_from_every_state(operation: Operation, state: S) -> None:
    acts, done = EXPECTED[operation]
    if state in acts:
        assert check(operation, "sbx-1", state) is True
    elif state in done:
        assert check(operation, "sbx-1", state) is False
    else:
        with pytest.raises(InvalidStateTransition) as refused:
            check(operation, "sbx-1", state)
        assert http_status(refused.value) == 409
        assert refused.value.details == {"sandbox_id": "sbx-1", "operation": operation.value, "state": state.value}
        assert refused.value.message.startswith(f"cannot {operation.value} sandbox sbx-1: it is {state.value}; ")


def test_rules_never_overlap() -> None:
    for rule in RULES.values():
        assert not rule.acts & rule.done
        assert not set(rule.hints) & (rule.acts | rule.done)


def test_hints_point_to_the_right_operation() -> None:
    with pytest.raises(InvalidStateTransition, match="started, not resumed"):
        check(Operation.RESUME, "s", S.STOPPED)
    with pytest.raises(InvalidStateTransition, match="resumed, not started"):
        check(Operation.START, "s", S.PAUSED)
