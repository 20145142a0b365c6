"""A Containerfile build's record: what it builds, where each step stands, how it ended."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum


class BuildState(str, Enum):
    BUILDING = "building"
    READY = "ready"
    ERROR = "error"


# Stable codes of a build that ended in error (the record's `error.code`).
BUILD_FAILED = "BUILD_FAILED"  # a step failed: a RUN exited non-zero, a COPY could not be applied
BUILD_TIMEOUT = "BUILD_TIMEOUT"  # past the build's time limit
BUILD_CANCELLED = "BUILD_CANCELLED"  # deleted while building, or cut by a server restart


def new_build_id() -> str:
    return "bld-" + secrets.token_hex(8)


@dataclass
class BuildStep:
    index: int
    line: int
    instruction: str  # as written
    kind: str  # config | run | copy
    state: str = "pending"  # pending | running | done | error
    cached: bool | None = None  # run/copy steps: True if the layer came from the step cache
    layer: str | None = None
    exit_code: int | None = None
    seconds: float | None = None


@dataclass
class BuildError:
    code: str
    message: str
    step: int | None = None
    line: int | None = None
    exit_code: int | None = None


@dataclass
class Build:
    id: str
    template: str  # the name:tag it makes
    base: str
    state: BuildState
    created_at: str
    updated_at: str
    steps: list[BuildStep] = field(default_factory=list)
    error: BuildError | None = None
    digest: str | None = None  # the template's, once ready
    log_bytes: int = 0
    sandbox_id: str | None = None  # the step sandbox running now (deleted at the end of each step)
