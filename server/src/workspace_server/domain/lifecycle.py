"""The sandbox state machine (pure): which lifecycle operation is allowed from which state.

    create ──> starting ──> running <──pause/resume──> paused
                  │            │                          │
                  │            └──────stop──> stopping <──┘
                  │                              │
                  └─ error      stopped <────────┘
                                   │
                               start └──> starting ──> running

    delete: from every state ──> deleting ──> (gone, 404)

Each operation names the states it acts on (`acts`), the states where it has nothing to
do and answers so (`done`, the repeat of an operation is harmless), and refuses every
other state with INVALID_STATE_TRANSITION and a hint. `starting` and `stopping` never
reach these checks from the API: operations on one sandbox are serialised, so a caller
sees the state the previous operation left.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from workspace_server.domain.errors import InvalidStateTransition
from workspace_server.domain.models import SandboxState

S = SandboxState


class Operation(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    START = "start"
    FORK = "fork"


@dataclass(frozen=True)
class Rule:
    acts: frozenset[SandboxState]
    done: frozenset[SandboxState]
    hints: dict[SandboxState, str]


RULES: dict[Operation, Rule] = {
    Operation.PAUSE: Rule(
        acts=frozenset({S.RUNNING}),
        done=frozenset({S.PAUSED}),
        hints={S.STOPPED: "start it first", S.ERROR: "delete it", S.DELETING: "it is being deleted"},
    ),
    Operation.RESUME: Rule(
        acts=frozenset({S.PAUSED}),
        done=frozenset({S.RUNNING}),
        hints={S.STOPPED: "a stopped sandbox is started, not resumed", S.ERROR: "delete it"},
    ),
    Operation.STOP: Rule(
        acts=frozenset({S.RUNNING, S.PAUSED}),
        done=frozenset({S.STOPPED}),
        hints={S.ERROR: "delete it", S.DELETING: "it is being deleted"},
    ),
    Operation.START: Rule(
        acts=frozenset({S.STOPPED}),
        done=frozenset({S.RUNNING}),
        hints={S.PAUSED: "a paused sandbox is resumed, not started", S.ERROR: "delete it"},
    ),
    Operation.FORK: Rule(
        acts=frozenset({S.RUNNING, S.PAUSED, S.STOPPED}),
        done=frozenset(),
        hints={S.ERROR: "its files may be incomplete: delete it", S.DELETING: "it is being deleted"},
    ),
}
DEFAULT_HINT = "wait until the operation in progress ends, then retry"


def check(operation: Operation, sandbox_id: str, state: SandboxState) -> bool:
    """True if `operation` has work to do from `state`, False if it is already done (a
    harmless repeat); raises InvalidStateTransition for a state it may not start from."""
    rule = RULES[operation]
    if state in rule.acts:
        return True
    if state in rule.done:
        return False
    raise InvalidStateTransition(sandbox_id, operation.value, state.value, rule.hints.get(state, DEFAULT_HINT))
