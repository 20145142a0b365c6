"""What a pod object says about its sandbox: where the agent is, and if the sandbox is
over, why, in words a user can act on (evicted, node lost, OOM-killed, deleted...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workspace_server.runtimes.kubernetes import labels

SANDBOX_CONTAINER = "sandbox"
# Waiting reasons that will not resolve by themselves: the sandbox can never start.
FATAL_WAITING = {
    "ErrImagePull": "the template's image cannot be pulled",
    "ImagePullBackOff": "the template's image cannot be pulled",
    "InvalidImageName": "the template's image name is invalid",
    "CreateContainerConfigError": "the pod's configuration is invalid",
    "CreateContainerError": "the container could not be created",
    "RunContainerError": "the container could not be started",
}
DISRUPTIONS = {
    "DeletionByTaintManager": "the node was lost (not ready or unreachable), and its pods were evicted",
    "EvictionByEvictionAPI": "the pod was evicted (API-initiated eviction, e.g. a node drain)",
    "PreemptionByScheduler": "the pod was preempted by a higher-priority pod",
    "TerminationByKubelet": "the kubelet terminated the pod (node pressure or shutdown)",
    "DeletionByPodGC": "the node is gone, and the pod was garbage-collected",
}


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    sandbox_id: str | None
    phase: str
    pod_ip: str | None
    created: float
    deleting: bool
    agent_running: bool
    failure: str | None  # set once the sandbox cannot (or can no longer) run
    oom_kills: int

    @property
    def reachable(self) -> bool:
        return self.phase == "Running" and self.agent_running and bool(self.pod_ip) and not self.deleting


def _epoch(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _sandbox_container(status: dict[str, Any]) -> dict[str, Any]:
    for container in status.get("containerStatuses") or []:
        if container.get("name") == SANDBOX_CONTAINER:
            return dict(container)
    return {}


def failure(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            reason = str(condition.get("reason"))
            return DISRUPTIONS.get(reason, f"the pod was disrupted ({reason}): {condition.get('message', '')}".strip())
    if status.get("reason") == "Evicted":
        return f"the pod was evicted by the kubelet: {status.get('message', 'node pressure')}"
    if status.get("reason") in ("NodeLost", "NodeShutdown", "Terminated"):
        return f"the node was lost ({status['reason']}): {status.get('message', '')}".strip()
    container = _sandbox_container(status)
    terminated = (container.get("state") or {}).get("terminated")
    if terminated:
        if terminated.get("reason") == "OOMKilled":
            return "the sandbox was OOM-killed: its processes and agent exceeded the memory limit"
        return (
            f"the sandbox's agent exited ({terminated.get('reason', 'Error')}, exit code {terminated.get('exitCode')})"
        )
    waiting = (container.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING:
        return f"{FATAL_WAITING[waiting['reason']]}: {waiting.get('message', waiting['reason'])}"
    for init in status.get("initContainerStatuses") or []:
        init_terminated = (init.get("state") or {}).get("terminated") or {}
        if init_terminated and init_terminated.get("exitCode") != 0:
            return (
                f"the agent could not be installed in the pod (init container exited {init_terminated.get('exitCode')})"
            )
        init_waiting = (init.get("state") or {}).get("waiting") or {}
        if init_waiting.get("reason") in FATAL_WAITING:
            return f"the agent image cannot be used: {init_waiting.get('message', init_waiting['reason'])}"
    if status.get("phase") == "Failed":
        return f"the pod failed: {status.get('message') or status.get('reason') or 'no reason given'}"
    if status.get("phase") == "Succeeded":
        return "the sandbox's agent exited"
    if status.get("phase") == "Unknown":
        return "the node stopped reporting the pod's state (node lost)"
    return None


def view(pod: dict[str, Any]) -> PodView:
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    container = _sandbox_container(status)
    oom = sum(
        1
        for state in (
            (container.get("state") or {}).get("terminated"),
            (container.get("lastState") or {}).get("terminated"),
        )
        if state and state.get("reason") == "OOMKilled"
    )
    return PodView(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        sandbox_id=(metadata.get("labels") or {}).get(labels.SANDBOX_ID),
        phase=str(status.get("phase") or "Pending"),
        pod_ip=status.get("podIP") or None,
        created=_epoch(metadata.get("creationTimestamp")),
        deleting=bool(metadata.get("deletionTimestamp")),
        agent_running="running" in (container.get("state") or {}),
        failure=failure(pod),
        oom_kills=oom,
    )
