"""The E2B messages this layer reads and writes, in their JSON forms.

Control plane: E2B's OpenAPI document (camelCase JSON). Data plane: envd's process.proto and
filesystem.proto in proto3 JSON form (lowerCamelCase fields, enums by name, bytes as base64).
Written for this project from the published definitions (e2b-dev/E2B spec/, SDK 2.20.0)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ENVD_VERSION = "0.5.7"  # the oldest envd whose SDK paths (default user, octet-stream upload) we serve


class Message(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


# control plane


class NetworkConfig(Message):
    allow_public_traffic: bool = Field(default=True, alias="allowPublicTraffic")
    allow_out: list[str] | None = Field(default=None, alias="allowOut")
    deny_out: list[str] | None = Field(default=None, alias="denyOut")
    mask_request_host: str | None = Field(default=None, alias="maskRequestHost")


class NewSandbox(Message):
    template_id: str = Field(alias="templateID", min_length=1, max_length=200)
    timeout: int = Field(default=15, ge=1, le=86_400)
    auto_pause: bool = Field(default=False, alias="autoPause")
    allow_internet_access: bool | None = Field(default=None, alias="allow_internet_access")
    metadata: dict[str, str] | None = None
    env_vars: dict[str, str] | None = Field(default=None, alias="envVars")
    network: NetworkConfig | None = None


class TimeoutRequest(Message):
    timeout: int = Field(ge=0, le=86_400)


class ConnectRequest(Message):
    timeout: int = Field(ge=0, le=86_400)


# envd: process.Process


class ProcessConfig(Message):
    cmd: str
    args: list[str] = []
    envs: dict[str, str] = {}
    cwd: str | None = None


class ProcessSelector(Message):
    pid: int | None = None
    tag: str | None = None


class PtySize(Message):
    cols: int
    rows: int


class Pty(Message):
    size: PtySize


class StartRequest(Message):
    process: ProcessConfig
    pty: Pty | None = None
    tag: str | None = None
    stdin: bool | None = None


class ProcessRequest(Message):
    process: ProcessSelector


class ProcessConnectRequest(ProcessRequest):
    pass


class ProcessInput(Message):
    stdin: str | None = None  # base64
    pty: str | None = None


class SendInputRequest(Message):
    process: ProcessSelector
    input: ProcessInput


class UpdateRequest(Message):
    process: ProcessSelector
    pty: Pty | None = None


class SendSignalRequest(Message):
    process: ProcessSelector
    signal: str


class ListRequest(Message):
    pass


# envd: filesystem.Filesystem


class PathRequest(Message):
    path: str


class ListDirRequest(Message):
    path: str
    depth: int = Field(default=1, ge=0, le=64)


class WatchRequest(Message):
    path: str
    recursive: bool = False


class WatcherRequest(Message):
    watcher_id: str = Field(alias="watcherId", max_length=64)


class MoveRequest(Message):
    source: str
    destination: str


SIGNALS = {"SIGNAL_SIGKILL": 9, "SIGNAL_SIGTERM": 15, "SIGNAL_SIGINT": 2, "SIGNAL_SIGHUP": 1}
SIGNAL_NAMES = {9: "killed", 15: "terminated", 2: "interrupt", 1: "hangup"}
FILE_TYPES = {"file": "FILE_TYPE_FILE", "directory": "FILE_TYPE_DIRECTORY"}
