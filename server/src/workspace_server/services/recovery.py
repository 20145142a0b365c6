"""Start-up recovery: what a server restart does to the sandboxes a previous server left.

Every stored sandbox is brought to a true state: re-adopted when its agent answers
(running or paused, the freezer made to agree with the record), an operation a crash
cut short finished, the files kept of a sandbox whose processes are gone. A sandbox whose
init is alive is never destroyed here: its processes and files are the user's. Host
resources no record accounts for (a warm sandbox, a create cut short) are torn down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from workspace_server.domain.errors import AgentNotConnected, WorkspaceError
from workspace_server.domain.models import Sandbox, SandboxState

if TYPE_CHECKING:
    from workspace_server.services.sandboxes import SandboxService

log = logging.getLogger(__name__)

AGENT_LOST_ON_RESTART = "the sandbox's processes did not survive the server restart"
STARTING_ON_RESTART = "the server restarted while the sandbox was starting"
STOPPED_ON_RESTART = "the server restarted while the sandbox was starting again"
AGENT_SILENT_ON_RESTART = (
    "the sandbox's agent did not answer after the server restarted, though its init is alive: its processes "
    "and files are kept; delete it, or restart the server to try again"
)
DISK_MISSING = "the sandbox's disk is missing"
RECOVERY_HELLO_TIMEOUT = 10.0  # per sandbox, all in parallel
RECOVERY_CONCURRENCY = 64


async def recover(sandboxes: SandboxService) -> None:
    """Bring every stored sandbox to a true state, then tear down what no record owns."""
    known = {record.id: record for record in sandboxes.store.list()}
    sandboxes.load(known.values())
    # In parallel: an agent starved of CPU by its own sandbox's processes may take
    # seconds to answer, and must not make every other sandbox wait (or look lost).
    limit = asyncio.Semaphore(RECOVERY_CONCURRENCY)

    async def recover_within_limit(record: Sandbox) -> None:
        async with limit:
            with contextlib.suppress(WorkspaceError):
                await _recover_one(sandboxes, record)

    await asyncio.gather(*(recover_within_limit(record) for record in known.values()))
    for sandbox_id in await sandboxes.runtime.list_ids():
        gone = sandbox_id not in known or sandboxes.stored(sandbox_id) is None
        if gone and not sandboxes.connected(sandbox_id):
            await sandboxes.destroy(sandbox_id, forget_record=False)


async def _recover_one(sandboxes: SandboxService, record: Sandbox) -> None:
    state = record.state
    runtime = sandboxes.runtime
    if state == SandboxState.ERROR and record.error_message != AGENT_SILENT_ON_RESTART:
        return
    if state == SandboxState.STOPPED:
        if not runtime.has_disk(record.id):
            sandboxes.set_state(record, SandboxState.ERROR, DISK_MISSING)
        return
    if state == SandboxState.DELETING:
        await sandboxes.remove(record, force=True)
        return
    if state == SandboxState.STARTING and record.started_at is None:  # a create or a fork cut short
        sandboxes.set_state(record, SandboxState.ERROR, STARTING_ON_RESTART)
        await sandboxes.destroy(record.id, forget_record=False)
        return
    if state in (SandboxState.STOPPING, SandboxState.STARTING):  # a stop or a start cut short
        await _keep_files_only(sandboxes, record, STOPPED_ON_RESTART if state == SandboxState.STARTING else None)
        return
    started = await runtime.running(record.id)
    agent = None
    if started is not None:
        with contextlib.suppress(AgentNotConnected, OSError):
            agent = await sandboxes.connect(record.id, started.agent_address, RECOVERY_HELLO_TIMEOUT)
    if agent is None and started is not None:
        # Its init is alive: never destroyed nor stopped by recovery (its processes and
        # files are the user's). Reported, for the user to delete or the next restart to retry.
        log.warning("sandbox %s: %s", record.id, AGENT_SILENT_ON_RESTART)
        sandboxes.set_state(record, SandboxState.ERROR, AGENT_SILENT_ON_RESTART)
        return
    if agent is None:
        await _keep_files_only(sandboxes, record, AGENT_LOST_ON_RESTART)
        return
    sandboxes.attach(record.id, agent)
    # A pause, resume or fork cut short: the runtime is made to agree with the record.
    if state == SandboxState.PAUSED:
        await runtime.freeze(record.id)
    else:
        await runtime.thaw(record.id)
    if state == SandboxState.ERROR:  # silent at the last restart, answering now
        record = sandboxes.set_state(record, SandboxState.RUNNING)
    await sandboxes.export(record.id)
    log.info("re-adopted sandbox %s (%s)", record.id, state.value)


async def _keep_files_only(sandboxes: SandboxService, record: Sandbox, reason: str | None) -> None:
    """The sandbox's processes are gone or going: stop it, keeping its disk."""
    if not sandboxes.runtime.has_disk(record.id):
        sandboxes.set_state(record, SandboxState.ERROR, reason or DISK_MISSING)
        await sandboxes.destroy(record.id, forget_record=False)
        return
    try:
        await sandboxes.runtime.stop(record.id)
    except WorkspaceError as exc:
        sandboxes.set_state(record, SandboxState.ERROR, f"{reason or 'stopping failed'}: {exc.message}")
        return
    message = f"{reason}; its files are kept: start it again" if reason else None
    sandboxes.set_state(replace(record, expires_at=None), SandboxState.STOPPED, message)
