// One sandbox: its state, a terminal, its processes (kill) and a file browser.
import { api, age, escapeHtml, humanBytes, limits, toast } from "./api.js";
import { actionsFor } from "./app.js";
import { openTerminal } from "./terminal.js";

const POLL_MS = 3000;

export function show(main, sandboxId, consoleState) {
  const id = encodeURIComponent(sandboxId);
  main.innerHTML = `<h1><a href="#/">Sandboxes</a> / ${escapeHtml(sandboxId)} <span id="state" class="state"></span></h1>
<p id="summary" class="muted"></p>
<div class="toolbar" id="sandbox-actions"></div>
<div id="terminal"></div>
<div class="grid">
  <section><h2>Processes</h2><table><thead><tr><th>PID</th><th>Command</th><th>PTY</th><th></th></tr></thead><tbody id="process-rows"></tbody></table></section>
  <section><h2>Files</h2>
    <form class="path" id="file-path"><input name="path" value="/workspace" aria-label="Directory"><button class="quiet" type="submit">Open</button><button class="quiet" type="button" id="file-up">Up</button></form>
    <div class="toolbar"><label>Upload into this directory <input type="file" id="upload" multiple></label></div>
    <table><thead><tr><th>Name</th><th>Size</th><th>Modified</th><th></th></tr></thead><tbody id="file-rows"></tbody></table>
  </section>
</div>`;
  let stopped = false;
  let timer = 0;
  let directory = "/workspace";
  let session = null;

  const actions = document.getElementById("sandbox-actions");
  let shownState = null;
  const showActions = (state) => {
    if (state === shownState) return;
    shownState = state;
    actions.innerHTML =
      actionsFor(state)
        .map((action) => `<button class="quiet" data-action="${escapeHtml(action)}">${escapeHtml(action)}</button>`)
        .join("") + `<button class="danger" data-action="delete">Delete sandbox</button>`;
  };
  showActions(null);
  actions.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    try {
      if (action === "delete") {
        if (!confirm(`Delete ${sandboxId}?`)) return;
        await api("DELETE", `/sandboxes/${id}?force=true`);
        location.hash = "#/";
        return;
      }
      const result = await api("POST", `/sandboxes/${id}/${action}`, {});
      if (result && result.id && result.id !== sandboxId) location.hash = `#/sandboxes/${encodeURIComponent(result.id)}`;
      refresh();
    } catch (error) {
      toast(error.message);
    }
  });

  async function refresh() {
    clearTimeout(timer);
    try {
      const [sandbox, { processes }] = await Promise.all([api("GET", `/sandboxes/${id}`), api("GET", `/sandboxes/${id}/processes`)]);
      if (stopped) return;
      const state = document.getElementById("state");
      state.textContent = sandbox.state;
      state.className = "state " + sandbox.state;
      showActions(sandbox.state);
      document.getElementById("summary").textContent =
        `${sandbox.template} · ${limits(sandbox)} · created ${age(sandbox.created_at)} ago` + (sandbox.expires_at ? ` · expires ${sandbox.expires_at}` : "");
      document.getElementById("process-rows").innerHTML =
        processes
          .map(
            (p) => `<tr><td>${p.pid}</td><td>${escapeHtml([p.command, ...p.args].join(" "))}</td><td>${p.pty ? "yes" : ""}</td>
<td class="actions"><button class="danger" data-pid="${p.pid}" data-signal="15">TERM</button><button class="danger" data-pid="${p.pid}" data-signal="9">KILL</button></td></tr>`,
          )
          .join("") || `<tr><td colspan="4" class="muted">No processes.</td></tr>`;
    } catch (error) {
      if (!stopped) toast(error.message);
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  document.getElementById("process-rows").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-pid]");
    if (!button) return;
    try {
      await api("POST", `/sandboxes/${id}/processes/${button.dataset.pid}/kill`, { signal: Number(button.dataset.signal) });
      refresh();
    } catch (error) {
      toast(error.message);
    }
  });

  async function listFiles(path) {
    try {
      const { files } = await api("GET", `/sandboxes/${id}/files/list?path=${encodeURIComponent(path)}`);
      directory = path;
      document.querySelector("#file-path input").value = path;
      files.sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === "directory" ? -1 : 1));
      document.getElementById("file-rows").innerHTML =
        files
          .map((f) => {
            const href = `/api/v1/sandboxes/${id}/files?path=${encodeURIComponent(f.path)}`;
            const name =
              f.type === "directory"
                ? `<a href="#" data-open="${escapeHtml(f.path)}">${escapeHtml(f.name)}/</a>`
                : `<a href="${escapeHtml(href)}" download="${escapeHtml(f.name)}">${escapeHtml(f.name)}</a>`;
            return `<tr><td>${name}</td><td>${f.type === "file" ? humanBytes(f.size) : ""}</td><td>${escapeHtml((f.modified_at || "").replace("T", " ").slice(0, 19))}</td>
<td class="actions"><button class="danger" data-delete="${escapeHtml(f.path)}" data-directory="${f.type === "directory"}">Delete</button></td></tr>`;
          })
          .join("") || `<tr><td colspan="4" class="muted">Empty directory.</td></tr>`;
    } catch (error) {
      toast(error.message);
    }
  }

  document.getElementById("file-path").addEventListener("submit", (event) => {
    event.preventDefault();
    listFiles(new FormData(event.target).get("path"));
  });
  document.getElementById("file-up").addEventListener("click", () => listFiles(directory.replace(/\/[^/]+\/?$/, "") || "/"));
  document.getElementById("file-rows").addEventListener("click", async (event) => {
    const open = event.target.closest("a[data-open]");
    if (open) {
      event.preventDefault();
      listFiles(open.dataset.open);
      return;
    }
    const remove = event.target.closest("button[data-delete]");
    if (!remove || !confirm(`Delete ${remove.dataset.delete}?`)) return;
    try {
      await api("DELETE", `/sandboxes/${id}/files?path=${encodeURIComponent(remove.dataset.delete)}&recursive=${remove.dataset.directory}`);
      listFiles(directory);
    } catch (error) {
      toast(error.message);
    }
  });
  document.getElementById("upload").addEventListener("change", async (event) => {
    for (const file of event.target.files) {
      try {
        await api("PUT", `/sandboxes/${id}/files?path=${encodeURIComponent(directory.replace(/\/$/, "") + "/" + file.name)}`, file);
        toast(`Uploaded ${file.name}`);
      } catch (error) {
        toast(`${file.name}: ${error.message}`);
      }
    }
    event.target.value = "";
    listFiles(directory);
  });

  openTerminal(document.getElementById("terminal"), sandboxId, () => refresh())
    .then((opened) => {
      if (stopped) opened.dispose();
      else consoleState.session = session = opened;
    })
    .catch((error) => toast(error.message));
  refresh();
  listFiles(directory);

  return () => {
    stopped = true;
    clearTimeout(timer);
    if (session) {
      session.kill(); // leaving the page ends its shell instead of leaving it running
      session.dispose();
      consoleState.session = null;
    }
  };
}
