"""The web console in headless chromium: sign in, create a sandbox, use its terminal, files
and processes, delete it; screenshots of each page are kept in tests/artifacts/console/.
The console's targets are measured here and written to measurements.json (not asserted,
except the first load's size, which is not a time)."""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.browser import ARTIFACTS, chromium, require_chromium, screenshot, terminal_lines
from tests.support.live_server import LiveServer, data_root, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

KEY = "console-test-key-4f1d"
STTY_SIZE = re.compile(r"^(\d+) (\d+)$")
measurements: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    measurements[name] = value
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "measurements.json").write_text(json.dumps(measurements, indent=2) + "\n")


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LiveServer]:
    require_chromium()
    server = start_server(data_root() / "data", api_key=KEY, extra=["--pool-size", "1"])
    try:
        yield server
    finally:
        with httpx.Client(base_url=server.url + "/api/v1", headers={"X-API-Key": KEY}, timeout=60) as api:
            for item in api.get("/sandboxes").json()["sandboxes"]:
                api.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        stop_server(server)


@pytest.fixture
def browser() -> Iterator[BrowserContext]:
    with chromium() as context:
        yield context


def wait_until(predicate: Callable[[], Any], timeout: float = 20, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {message}")
        time.sleep(0.05)


def wait_js(page: Page, expression: str, timeout: float = 20) -> None:
    """Poll a JavaScript expression from here (page.wait_for_function evaluates strings with
    eval, which the console's Content-Security-Policy forbids, as it should)."""
    wait_until(lambda: page.evaluate(expression), timeout, message=expression)


def type_command(page: Page, command: str) -> None:
    page.keyboard.type(command)
    page.keyboard.press("Enter")


def stty_size(page: Page, previous: int) -> tuple[int, int]:
    """Run `stty size` in the terminal; the newest answer after `previous` answers."""
    type_command(page, "stty size")

    def answers() -> list[tuple[int, int]]:
        return [(int(m[1]), int(m[2])) for line in terminal_lines(page) if (m := STTY_SIZE.match(line.strip()))]

    found = wait_until(lambda: len(answers()) > previous and answers(), message="stty size answer")
    return found[-1]  # type: ignore[no-any-return]


def sign_in(page: Page, server: LiveServer, key: str) -> None:
    page.goto(server.url + "/ui/")
    page.fill("input[name=api_key]", key)
    page.click("#signin button[type=submit]")


def keystroke_echo_ms(page: Page, count: int) -> list[float]:
    """Keystroke → echo, timed in the page: from xterm.js handing a key to the WebSocket to
    the echo's frame arriving."""
    samples: list[float] = page.evaluate(
        """async (count) => {
          const { term, socket } = window.workspaceConsole.session;
          const samples = [];
          for (let i = 0; i < count + 5; i++) {
            if (i % 40 === 39) term.input("\\x15", true);  // ^U keeps the line short
            await new Promise((resolve) => setTimeout(resolve, 10));
            const started = performance.now();
            await new Promise((resolve) => {
              const onMessage = (event) => {
                if (typeof event.data !== "string") { socket.removeEventListener("message", onMessage); resolve(); }
              };
              socket.addEventListener("message", onMessage);
              term.input("a", true);
            });
            if (i >= 5) samples.push(performance.now() - started);
          }
          term.input("\\x15", true);
          return samples;
        }""",
        count,
    )
    return samples


def test_console_flow_with_an_api_key(keyed_server: LiveServer, browser: BrowserContext) -> None:
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    api = httpx.Client(base_url=keyed_server.url + "/api/v1", headers={"X-API-Key": KEY}, timeout=60)

    # A wrong key is refused and says so; the right one signs in.
    sign_in(page, keyed_server, "not-the-key")
    page.wait_for_selector("#signin-failed", state="visible")
    screenshot(page, "01-sign-in-refused")
    sign_in(page, keyed_server, KEY)
    page.wait_for_selector("#create button")
    assert page.is_hidden("#signin")

    # Create a sandbox from the form; it appears in the list, running.
    page.fill("#create input[name=name]", "from-the-console")
    page.click("#create button[type=submit]")
    row = page.locator("#sandbox-rows tr", has_text="from-the-console")
    row.wait_for()
    wait_until(lambda: "running" in row.inner_text(), message="running state in the list")
    screenshot(page, "02-sandboxes")
    sandbox_id = row.locator("a").inner_text()
    assert api.get(f"/sandboxes/{sandbox_id}").json()["name"] == "from-the-console"

    # Its page: the terminal runs what we type.
    row.locator("a").click()
    wait_js(page, "window.workspaceConsole.session && window.workspaceConsole.session.ptyId")
    page.click("#terminal")
    wait_until(lambda: any(f"user@{sandbox_id}" in line for line in terminal_lines(page)), message="prompt")
    type_command(page, "echo hello")
    wait_until(lambda: "hello" in [line.strip() for line in terminal_lines(page)], message="hello in the terminal")

    # The terminal follows the window's size.
    rows, cols = stty_size(page, 0)
    assert (rows, cols) == tuple(
        page.evaluate("[window.workspaceConsole.session.term.rows, window.workspaceConsole.session.term.cols]")
    )
    page.set_viewport_size({"width": 900, "height": 700})
    wait_until(lambda: page.evaluate("window.workspaceConsole.session.term.cols") != cols, message="xterm.js refit")
    resized = stty_size(page, 1)
    assert resized != (rows, cols)
    assert resized == tuple(
        page.evaluate("[window.workspaceConsole.session.term.rows, window.workspaceConsole.session.term.cols]")
    )
    page.set_viewport_size({"width": 1280, "height": 900})

    # Copy (Ctrl+Shift+C puts the selection on the clipboard) and paste (the browser's paste
    # event reaches the shell).
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=keyed_server.url)
    type_command(page, "echo copy-$((6*7))-me")
    wait_until(lambda: "copy-42-me" in [line.strip() for line in terminal_lines(page)], message="copy line")
    page.evaluate("() => window.workspaceConsole.session.term.selectAll()")
    page.keyboard.press("Control+Shift+C")
    assert "copy-42-me" in page.evaluate("() => navigator.clipboard.readText()")
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.setData("text/plain", "echo pasted-$((40+2))");
          const input = document.querySelector("#terminal textarea");
          input.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
        }"""
    )
    page.keyboard.press("Enter")
    wait_until(lambda: "pasted-42" in [line.strip() for line in terminal_lines(page)], message="pasted command ran")

    samples = keystroke_echo_ms(page, 100)
    record("keystroke_echo_ms", {"p50": statistics.median(samples), "p95": sorted(samples)[94], "n": len(samples)})

    # Files: upload one, see it listed, download it back.
    content = b"uploaded from the browser\n" * 1000
    page.set_input_files("#upload", files=[{"name": "upload.txt", "mimeType": "text/plain", "buffer": content}])
    link = page.locator("#file-rows a", has_text="upload.txt")
    link.wait_for()
    assert api.get(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/upload.txt"}).content == content
    with page.expect_download() as download_info:
        link.click()
    downloaded = download_info.value.path()
    assert downloaded is not None and downloaded.read_bytes() == content

    # Processes: one started through the API shows up, and its KILL button ends it.
    ended = threading.Event()

    def run_sleep() -> None:
        with httpx.Client(base_url=keyed_server.url + "/api/v1", headers={"X-API-Key": KEY}, timeout=120) as other:
            with other.stream(
                "POST", f"/sandboxes/{sandbox_id}/processes/stream", json={"command": "sleep", "args": ["300"]}
            ) as events:
                for _ in events.iter_lines():
                    pass
        ended.set()

    threading.Thread(target=run_sleep, daemon=True).start()
    process_row = page.locator("#process-rows tr", has_text="sleep 300")
    process_row.wait_for(timeout=20_000)
    assert page.locator("#process-rows tr", has_text="bash").count() >= 1  # the terminal's shell
    screenshot(page, "03-sandbox")
    process_row.locator("button", has_text="KILL").click()
    assert ended.wait(20), "the killed process's stream did not end"
    process_row.wait_for(state="detached", timeout=20_000)

    # Delete a file through the browser.
    page.locator("#file-rows tr", has_text="upload.txt").locator("button", has_text="Delete").click()
    link.wait_for(state="detached")
    assert api.get(f"/sandboxes/{sandbox_id}/files/exists", params={"path": "/workspace/upload.txt"}).json() == {
        "exists": False
    }

    # Templates page.
    page.goto(keyed_server.url + "/ui/#/templates")
    page.locator("#template-rows tr", has_text="workspace-test:latest").wait_for()
    screenshot(page, "04-templates")

    # Lifecycle buttons follow the state: pause, then resume.
    page.goto(keyed_server.url + f"/ui/#/sandboxes/{sandbox_id}")
    page.click("#sandbox-actions button[data-action=pause]")
    page.locator("#state", has_text="paused").wait_for()
    assert api.get(f"/sandboxes/{sandbox_id}").json()["state"] == "paused"
    page.click("#sandbox-actions button[data-action=resume]")
    page.locator("#state", has_text="running").wait_for()
    page.locator("#sandbox-actions button[data-action=pause]").wait_for()

    # Delete the sandbox from its page: back to the list, gone from the server.
    page.click("#sandbox-actions button[data-action=delete]")
    wait_js(page, "location.hash === '#/'")
    page.locator("#sandbox-rows tr", has_text=sandbox_id).wait_for(state="detached")
    assert api.get(f"/sandboxes/{sandbox_id}").status_code == 404
    api.close()


def test_console_without_a_key_first_load_and_a_long_list(
    workspace_server: LiveServer, browser: BrowserContext
) -> None:
    """Loopback mode: no sign-in. Also the first load's size and the 500-sandbox render."""
    require_chromium()
    page = browser.new_page()
    page.goto(workspace_server.url + "/ui/")
    page.wait_for_selector("#create button")
    wait_js(page, "window.workspaceConsole.lastListRenderMs !== null")
    assert page.is_hidden("#signin") and page.is_hidden("#signout")
    transferred = page.evaluate(
        """() => performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
              .reduce((total, entry) => total + entry.transferSize, 0)"""
    )
    record("first_load_bytes", transferred)
    assert 0 < transferred <= 300 * 1024

    # The sandbox page adds xterm.js, loaded only there.
    created = httpx.post(workspace_server.url + "/api/v1/sandboxes", json={}, timeout=60).json()
    try:
        page.goto(workspace_server.url + f"/ui/#/sandboxes/{created['id']}")
        wait_js(page, "window.workspaceConsole.session && window.workspaceConsole.session.ptyId")
        with_terminal = page.evaluate(
            """() => performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
                  .reduce((total, entry) => total + entry.transferSize, 0)"""
        )
        record("sandbox_page_total_bytes", with_terminal)
    finally:
        httpx.delete(workspace_server.url + f"/api/v1/sandboxes/{created['id']}", params={"force": "true"}, timeout=60)

    # 500 sandboxes: the list is served synthetic (the render is what is timed).
    many = [
        {
            "id": f"sbx-{i:016x}", "template": "workspace-test:latest", "state": "running" if i % 7 else "error",
            "created_at": "2026-11-27T10:00:00.000000Z", "updated_at": "2026-11-27T10:00:00.000000Z",
            "name": f"agent-{i}", "cpu": 1.0, "memory_mb": 512, "disk_mb": 1024, "pids": 256, "network": i % 3 == 0,
        }
        for i in range(500)
    ]  # fmt: skip
    page.route(
        re.compile(r".*/api/v1/sandboxes$"),
        lambda route: route.fulfill(json={"sandboxes": many}) if route.request.method == "GET" else route.continue_(),
    )
    page.goto(workspace_server.url + "/ui/#/")
    page.reload()
    wait_js(page, "document.getElementById('sandbox-count')?.textContent === '500 sandboxes'")
    render_ms = [page.evaluate("window.workspaceConsole.lastListRenderMs")]
    for _ in range(4):  # the list re-renders on every poll
        wait_js(page, f"window.workspaceConsole.lastListRenderMs !== {render_ms[-1]}", timeout=10)
        render_ms.append(page.evaluate("window.workspaceConsole.lastListRenderMs"))
    record("list_500_render_ms", {"first": render_ms[0], "median": statistics.median(render_ms), "all": render_ms})
    assert page.locator("#sandbox-rows tr").count() == 500
    screenshot(page, "05-sandboxes-500")
