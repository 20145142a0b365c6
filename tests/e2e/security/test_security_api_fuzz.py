"""Property-based fuzzing of the REST API with schemathesis, against the live server's
own OpenAPI document (/openapi.json of the shared keyless server).

Every documented operation gets a few positive and negative examples (valid and invalid
by the document), once with random path parameters and once aimed at a real sandbox.
Checks: no 5xx, documented status codes, content types, headers and response schemas.

Bounded on purpose (docs/security.md lists this):
- examples are few and derandomized (the same ones every run, so results are stable);
- commands sent to /processes/run and /processes/stream always carry `timeout` <= 5 s, so
  a generated command that happens to exist cannot run (or stream) forever;
- POST /sandboxes gets fewer examples, and every sandbox the fuzzer creates is deleted;
- DELETE /sandboxes/{id} is only fuzzed with generated ids, never the target sandbox's;
- the WebSocket PTY routes are not in the OpenAPI document (tested in
  test_security_api_auth.py and the PTY suites instead).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.e2e.security.attack_support import create_sandbox, delete_sandbox
from tests.support.live_server import LiveServer

SPEC = Path(__file__).resolve().parents[3] / "spec" / "openapi.json"
OPERATIONS = sorted(
    (method.upper(), path) for path, ops in json.loads(SPEC.read_text())["paths"].items() for method in ops
)
# WS_FUZZ_EXAMPLES=N runs longer (as done to reach zero 5xx: docs/security.md); the suite's
# default keeps it to a few minutes.
EXAMPLES = int(os.environ.get("WS_FUZZ_EXAMPLES", "6"))
CREATE_EXAMPLES = max(3, EXAMPLES // 2)
COMMAND_TIMEOUT = 5
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# Operations whose fuzzing finds a server bug today: (method, path, target) -> the bug.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module")
def live_schema(workspace_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(workspace_server.url + "/openapi.json")


@pytest.fixture(scope="module")
def fuzz_target(workspace_server: LiveServer) -> Iterator[dict[str, Any]]:
    """A real sandbox for path parameters; any sandbox the fuzzer creates is deleted."""
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as client:
        before = {s["id"] for s in client.get("/sandboxes").json()["sandboxes"]}
        target = create_sandbox(client)
        yield target
        for item in client.get("/sandboxes").json()["sandboxes"]:
            if item["id"] not in before:
                delete_sandbox(client, item["id"])


def test_security_fuzz_covers_every_live_operation(live_schema: Any) -> None:
    live = {(op.ok().method.upper(), op.ok().path) for op in live_schema.get_all_operations()}
    assert live == set(OPERATIONS), "spec/openapi.json and the live document differ: regenerate the spec"


def _bound(case: Any) -> None:
    """Keep generated commands finite."""
    if case.operation.path.endswith(("/processes/run", "/processes/stream")) and isinstance(case.body, dict):
        timeout = case.body.get("timeout")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= COMMAND_TIMEOUT:
            case.body["timeout"] = COMMAND_TIMEOUT


def _fuzz(operation: Any, strategy: st.SearchStrategy[Any], base_url: str, examples: int, created: list[str]) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        _bound(case)
        response = case.call(base_url=base_url, timeout=COMMAND_TIMEOUT + 30)
        if operation.method.upper() == "POST" and operation.path == "/api/v1/sandboxes" and response.status_code == 201:
            created.append(response.json()["id"])
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("target", ["random-ids", "real-sandbox"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_security_fuzz_operation(
    request: pytest.FixtureRequest,
    live_schema: Any,
    fuzz_target: dict[str, Any],
    workspace_server: LiveServer,
    api: httpx.Client,
    method: str,
    path: str,
    mode: GenerationMode,
    target: str,
) -> None:
    if target == "real-sandbox" and "{sandbox_id}" not in path:
        pytest.skip("no sandbox in this path")
    bug = KNOWN_BUGS.get((method, path, target))
    if bug:
        request.applymarker(pytest.mark.xfail(strict=True, reason=bug))
    operation = live_schema[path][method]
    aimed = target == "real-sandbox" and not (method == "DELETE" and path == "/api/v1/sandboxes/{sandbox_id}")
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters={"sandbox_id": fuzz_target["id"]} if aimed else None
    )
    examples = CREATE_EXAMPLES if (method, path) == ("POST", "/api/v1/sandboxes") else EXAMPLES
    created: list[str] = []
    try:
        _fuzz(operation, strategy, workspace_server.url, examples, created)
    except Unsatisfiable:
        pytest.skip("the document leaves no invalid input to generate for this operation")
    finally:
        for sandbox_id in created:
            delete_sandbox(api, sandbox_id)
    assert httpx.get(workspace_server.url + "/healthz", timeout=10).status_code == 200
    assert workspace_server.process.poll() is None
