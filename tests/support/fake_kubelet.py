"""A fake kubelet for the fake API server: it runs every pod of a namespace as the REAL
agent, in a private mount and PID namespace on this host, so the agent link, its token and
every REST call are real.

Per pod: a root of the host's /usr and /etc (read-only), fresh /proc, writable /workspace,
/tmp, /home/user, the agent copied in (as the init container would) and the pod's Secret
(or downward API files) mounted where the pod spec says. The agent runs as uid 1000, as PID
1 of its PID namespace, on the host's network at a pod IP of its own in 127.0.0.0/8 (the
server reaches it there, as it would reach a pod IP). Not a security boundary: a test stand-in.

Controls play the cluster's failures: eviction, node loss, OOM kill, pod IP reuse."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ctypes
import os
import random
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from tests.support.fake_kubernetes import FakeKubernetes, now_stamp
from workspace_server import agent as agent_package

SANDBOX_UID = 1000
AGENT_PORT = 7070
# Pod IPs in use by every fake kubelet of this process: two fake clusters alive at once
# (a session's and a test's) must not hand out the same address.
_IPS_IN_USE: set[str] = set()
_IPS_LOCK = threading.Lock()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A pod outlives no test process that crashed (the kubelet's thread is its parent)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


SECRET_WAIT_SECONDS = 30.0
LAUNCH = r"""
set -e
F="$1"; shift
for dir in usr etc; do mount --rbind "/$dir" "$F/$dir"; mount -o bind,remount,ro "$F/$dir"; done
mount --rbind /dev "$F/dev"
mount -t proc proc "$F/proc"
for pair in "$@"; do
  src="${pair%%=*}"; dst="${pair#*=}"
  mount --bind "$src" "$F$dst"; mount -o bind,remount,ro "$F$dst"
done
exec chroot --userspec=1000:1000 --groups=1000 "$F" /usr/bin/setpriv --pdeathsig KILL "${AGENT_COMMAND_0}" ${AGENT_ARGS}
"""


def _port_taken(ip: str, port: int = AGENT_PORT) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return True
    return False


class FakeKubelet:
    def __init__(self, api: FakeKubernetes, namespace: str, root: Path, reuse_ips: bool = True) -> None:
        self.api = api
        self.namespace = namespace
        self.root = root
        self.reuse_ips = reuse_ips  # lowest free address first: pod IPs come back, as in a cluster
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.ips: dict[str, str] = {}
        self.ever_used: set[str] = set()
        self.subnet = random.randrange(1, 255)
        self.oom: set[str] = set()
        self.stopping: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        api.run(lambda: api.store.listeners.append(self._on_event))

    # -- events from the store (on the fake's loop)
    def _on_event(self, resource: str, kind: str, pod: dict[str, Any]) -> None:
        if resource != "pods" or pod["metadata"].get("namespace") != self.namespace:
            return
        name = pod["metadata"]["name"]
        if kind == "ADDED":
            self._spawn(self._start(name))
        elif kind == "MODIFIED" and pod["metadata"].get("deletionTimestamp") and name not in self.stopping:
            self.stopping.add(name)
            self._spawn(self._stop(name))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _allocate_ip(self, name: str) -> str:
        """The lowest free address of this kubelet's own /16 in 127/8 (a random one: other test
        processes on the machine run fake kubelets too), skipping any where something already
        listens on the agent's port."""
        with _IPS_LOCK:
            for n in range(2, 65000):
                ip = f"127.{self.subnet}.{n // 250}.{n % 250 + 2}"
                if ip in _IPS_IN_USE or (not self.reuse_ips and ip in self.ever_used) or _port_taken(ip):
                    continue
                _IPS_IN_USE.add(ip)
                self.ips[name] = ip
                self.ever_used.add(ip)
                return ip
        raise RuntimeError("out of pod IPs")

    def _release_ip(self, name: str) -> None:
        ip = self.ips.pop(name, None)
        if ip is not None:
            with _IPS_LOCK:
                _IPS_IN_USE.discard(ip)

    def _update_status(self, name: str, change: Any) -> None:
        pod = self.api.store.objects.get(("pods", self.namespace, name))
        if pod is None:
            return
        updated = copy.deepcopy(pod)
        change(updated["status"])
        self.api.store.replace("pods", self.namespace, name, updated, subresource="status")

    async def _start(self, name: str) -> None:
        store = self.api.store
        pod = store.objects[("pods", self.namespace, name)]
        spec = pod["spec"]
        container = spec["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        pod_dir = self.root / f"{name}-{pod['metadata']['uid'][:8]}"
        fs = pod_dir / "fs"
        binds = []
        for volume in spec["volumes"]:
            source = pod_dir / "volumes" / volume["name"]
            source.mkdir(parents=True)
            if "secret" in volume:  # the kubelet waits until the Secret exists, then mounts it
                data = await self._wait_secret(volume["secret"]["secretName"])
                if data is None:
                    self._update_status(name, lambda s: s.update(phase="Pending", reason="FailedMount"))
                    return
                self._write_files(source, {k: base64.b64decode(v) for k, v in data.items()})
            elif "downwardAPI" in volume:
                fields = {"metadata.uid": pod["metadata"]["uid"], "metadata.name": name}
                self._write_files(
                    source,
                    {i["path"]: fields[i["fieldRef"]["fieldPath"]].encode() for i in volume["downwardAPI"]["items"]},
                )
            elif volume["name"] == "agent":  # the init container's copy of /opt/workspace-agent
                agent_dir = Path(agent_package.__file__).resolve().parent
                shutil.copytree(agent_dir, source, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            if volume["name"] in mounts and (
                "secret" in volume or "downwardAPI" in volume or volume["name"] == "agent"
            ):
                binds.append(f"{source}={mounts[volume['name']]}")
        for directory in ("usr", "etc", "proc", "dev", *(m.lstrip("/") for m in mounts.values())):
            (fs / directory).mkdir(parents=True, exist_ok=True)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
            (fs / link).symlink_to(target)
        for volume in spec["volumes"]:  # emptyDirs: writable by fsGroup (the sandbox user here)
            if "emptyDir" in volume and volume["name"] != "agent" and volume["name"] in mounts:
                os.chown(fs / mounts[volume["name"]].lstrip("/"), SANDBOX_UID, SANDBOX_UID)
        (fs / "tmp").chmod(0o1777)
        (fs / "var/tmp").chmod(0o1777)
        ip = self._allocate_ip(name)
        command = [a.replace("0.0.0.0", ip) for a in container["command"]]
        command[0] = "/usr/bin/python3" if command[0] == "python3" else command[0]
        env = {"AGENT_COMMAND_0": command[0], "AGENT_ARGS": " ".join(command[1:]), "PATH": "/usr/sbin:/usr/bin"}
        log = open(pod_dir / "agent.log", "ab")
        process = await asyncio.create_subprocess_exec(
            "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
            "sh", "-c", LAUNCH, "launch", str(fs), *binds,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        log.close()
        self.processes[name] = process

        def running(status: dict[str, Any]) -> None:
            status.update(
                phase="Running",
                podIP=ip,
                podIPs=[{"ip": ip}],
                hostIP="127.0.0.1",
                startTime=now_stamp(),
                conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": now_stamp()}],
                initContainerStatuses=[
                    {
                        "name": "install-agent",
                        "ready": True,
                        "restartCount": 0,
                        "image": "agent",
                        "imageID": "",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
                containerStatuses=[
                    {
                        "name": "sandbox",
                        "ready": True,
                        "restartCount": 0,
                        "image": container["image"],
                        "imageID": "",
                        "started": True,
                        "state": {"running": {"startedAt": now_stamp()}},
                    }
                ],
            )

        self._update_status(name, running)
        self._spawn(self._monitor(name, process))

    async def _wait_secret(self, secret_name: str) -> dict[str, str] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SECRET_WAIT_SECONDS
        while loop.time() < deadline:
            secret = self.api.store.objects.get(("secrets", self.namespace, secret_name))
            if secret is not None:
                return dict(secret.get("data") or {})
            await asyncio.sleep(0.005)
        return None

    @staticmethod
    def _write_files(directory: Path, files: dict[str, bytes]) -> None:
        for key, value in files.items():
            path = directory / key
            path.write_bytes(value)
            os.chown(path, 0, SANDBOX_UID)
            path.chmod(0o440)  # defaultMode 0440, group = fsGroup

    async def _monitor(self, name: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._release_ip(name)
        if name in self.stopping:
            return
        reason = "OOMKilled" if name in self.oom else "Error"

        def terminated(status: dict[str, Any]) -> None:
            if status.get("reason") == "Evicted":
                return
            status["phase"] = "Failed"
            for container in status.get("containerStatuses") or []:
                container["ready"] = False
                container["state"] = {
                    "terminated": {"exitCode": 137 if reason == "OOMKilled" else code, "reason": reason}
                }

        self._update_status(name, terminated)

    @staticmethod
    def _signal_pod(process: asyncio.subprocess.Process) -> None:
        """SIGKILL the pod's PID 1 (its PID namespace dies with it), then unshare. The agent
        changed its credentials, so no parent-death signal reaches it by itself."""
        try:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        except OSError:
            children = []
        for pid in [*children, str(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    async def _kill(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.returncode is None:
            self._signal_pod(process)
            await process.wait()
        self._release_ip(name)

    async def _stop(self, name: str) -> None:
        await self._kill(name)
        pod = self.api.store.objects.get(("pods", self.namespace, name))
        if pod is not None:
            shutil.rmtree(self.root / f"{name}-{pod['metadata']['uid'][:8]}", ignore_errors=True)
        self.api.store.remove_pod(self.namespace, name)
        self.stopping.discard(name)

    # -- controls (from the test's thread)
    def evict(self, name: str, message: str = "The node was low on resource: memory.") -> None:
        async def evict() -> None:
            self.stopping.add(name)
            await self._kill(name)

            def failed(status: dict[str, Any]) -> None:
                status.update(phase="Failed", reason="Evicted", message=message)
                for container in status.get("containerStatuses") or []:
                    container["state"] = {"terminated": {"exitCode": 137, "reason": "Error"}}

            self._update_status(name, failed)
            self.stopping.discard(name)

        self.api.call(evict())

    def lose_node(self, name: str) -> None:
        """The node stops answering; the taint manager evicts its pods (DisruptionTarget)."""

        async def lose() -> None:
            self.stopping.add(name)
            await self._kill(name)

            def disrupted(status: dict[str, Any]) -> None:
                status.setdefault("conditions", []).append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                        "message": "Taint manager: deleting due to NoExecute taint",
                        "lastTransitionTime": now_stamp(),
                    }
                )

            self._update_status(name, disrupted)
            self.stopping.discard(name)

        self.api.call(lose())

    def oom_kill(self, name: str) -> None:
        async def kill() -> None:
            self.oom.add(name)
            process = self.processes.get(name)
            if process is not None:
                self._signal_pod(process)

        self.api.call(kill())

    def shutdown(self) -> None:
        async def stop_all() -> None:
            for task in list(self._tasks):
                task.cancel()
            for name in list(self.processes):
                self.stopping.add(name)
                await self._kill(name)

        self.api.call(stop_all())
        shutil.rmtree(self.root, ignore_errors=True)
