from __future__ import annotations

import time
from typing import Any

import httpx


def test_create_with_empty_body_uses_default_template(api: httpx.Client) -> None:
    response = api.post("/sandboxes")
    assert response.status_code == 201, response.text
    body = response.json()
    try:
        assert body["template"] == "default" and body["state"] == "running"
        assert body["id"].startswith("sbx-")
    finally:
        api.delete(f"/sandboxes/{body['id']}", params={"force": "true"})


def test_create_get_list_delete(api: httpx.Client) -> None:
    body = {
        "template": "workspace-test:latest",
        "name": "demo",
        "env": {"APP_ENV": "dev"},
        "metadata": {"project": "p"},
        "timeout": 600,
    }
    created = api.post("/sandboxes", json=body).json()
    sandbox_id = created["id"]
    assert created["name"] == "demo" and created["env"] == {"APP_ENV": "dev"}
    assert created["metadata"] == {"project": "p"} and created["timeout"] == 600
    assert created["expires_at"] is not None
    assert api.get(f"/sandboxes/{sandbox_id}").json()["id"] == sandbox_id
    running = [s["id"] for s in api.get("/sandboxes", params={"state": "running"}).json()["sandboxes"]]
    assert sandbox_id in running
    assert sandbox_id not in [s["id"] for s in api.get("/sandboxes", params={"state": "error"}).json()["sandboxes"]]
    run = api.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "printenv", "args": ["APP_ENV"]})
    assert run.json()["stdout"] == "dev\n"
    assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
    gone = api.get(f"/sandboxes/{sandbox_id}")
    assert gone.status_code == 404 and gone.json()["code"] == "SANDBOX_NOT_FOUND"


def test_unknown_template(api: httpx.Client) -> None:
    response = api.post("/sandboxes", json={"template": "nope:1"})
    assert response.status_code == 404
    assert response.json()["code"] == "TEMPLATE_NOT_FOUND"
    assert response.json()["details"]["template"] == "nope:1"


def test_unknown_sandbox_on_every_kind_of_route(api: httpx.Client) -> None:
    for method, path, kwargs in [
        ("GET", "/sandboxes/sbx-missing", {}),
        ("DELETE", "/sandboxes/sbx-missing", {}),
        ("POST", "/sandboxes/sbx-missing/processes/run", {"json": {"command": "true"}}),
        ("GET", "/sandboxes/sbx-missing/files/stat", {"params": {"path": "/"}}),
    ]:
        response = api.request(method, path, **kwargs)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "SANDBOX_NOT_FOUND"


def test_bad_bodies_get_invalid_request(api: httpx.Client) -> None:
    cases: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"json": {"timeout": "soon"}},
        {"json": {"env": {"A": 1}}},
        {"json": {"unknown_field": 1}},
        {"json": {"memory_mb": 1}},
        {"json": {"timeout": -5}},
        {"json": [1, 2, 3]},
    ]
    for case in cases:
        response = api.post("/sandboxes", **case)
        assert response.status_code == 400, (case, response.text)
        body = response.json()
        assert body["code"] == "INVALID_REQUEST" and body["message"], body


def test_absurd_sizes_are_refused(api: httpx.Client) -> None:
    response = api.post(
        "/sandboxes", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_oversized_headers_are_refused(api: httpx.Client) -> None:
    response = api.get("/sandboxes", headers={"X-Padding": "x" * 40000})
    assert response.status_code == 431 and response.json()["code"] == "HEADERS_TOO_LARGE"


def test_unknown_route_and_method_use_the_envelope(api: httpx.Client) -> None:
    assert api.get("/nope").json()["code"] == "NOT_FOUND"
    response = api.patch("/sandboxes")
    assert response.status_code == 405 and response.json()["code"] == "METHOD_NOT_ALLOWED"


def test_templates_are_listed(api: httpx.Client) -> None:
    names = {t["name"] for t in api.get("/templates").json()["templates"]}
    assert {"default", "workspace-test:latest"} <= names


def test_timeout_deletes_the_sandbox_on_time(api: httpx.Client) -> None:
    """on_timeout defaults to delete: the sandbox is `deleting` at once, then gone."""
    created = api.post("/sandboxes", json={"timeout": 1}).json()
    sandbox_id = created["id"]
    assert created["on_timeout"] == "delete"
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline:
        response = api.get(f"/sandboxes/{sandbox_id}")
        status = response.status_code
        if status == 404:
            break
        if response.json()["state"] == "deleting":
            run = api.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "true"})
            assert run.status_code in (404, 409), run.text
        time.sleep(0.1)
    assert status == 404
    assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 404
