// The console: sign-in state, a hash router, and the sandboxes and templates pages.
import { api, age, escapeHtml, humanBytes, limits, toast, whenUnauthorized } from "./api.js";

const main = document.getElementById("main");
const POLL_MS = 2000;
// Tests and people poking in the devtools find the live pieces here.
export const consoleState = { features: { sandbox_actions: [], template_routes: [] }, lastListRenderMs: null, session: null };
window.workspaceConsole = consoleState;

let leavePage = () => {};

function showSignIn() {
  document.getElementById("signin").hidden = false;
  main.hidden = true;
  leavePage();
}
whenUnauthorized(showSignIn);

async function start() {
  const state = await (await fetch("/ui/session", { credentials: "same-origin" })).json();
  document.getElementById("signout").hidden = !state.auth_required || !state.signed_in;
  if (new URLSearchParams(location.search).get("signin") === "failed") {
    document.getElementById("signin-failed").hidden = false;
    history.replaceState(null, "", "/ui/" + location.hash);
  }
  if (!state.signed_in) {
    showSignIn();
    return;
  }
  consoleState.features = await (await fetch("/ui/features", { credentials: "same-origin" })).json();
  window.addEventListener("hashchange", route);
  route();
}

function route() {
  leavePage();
  leavePage = () => {};
  const hash = location.hash || "#/";
  const sandboxMatch = hash.match(/^#\/sandboxes\/([^/]+)$/);
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("current", link.dataset.page === (hash.startsWith("#/templates") ? "templates" : "sandboxes"));
  }
  if (sandboxMatch) {
    import("./sandbox.js").then((page) => {
      leavePage = page.show(main, decodeURIComponent(sandboxMatch[1]), consoleState);
    });
  } else if (hash.startsWith("#/templates")) {
    leavePage = showTemplates();
  } else {
    leavePage = showSandboxes();
  }
}

// --- sandboxes -----------------------------------------------------------------------------

// Which lifecycle actions make sense in which state (those the server has are shown).
const ACTIONS_BY_STATE = { running: ["pause", "stop", "fork"], paused: ["resume", "stop", "fork"], stopped: ["start", "fork"] };

export function actionsFor(state) {
  return (ACTIONS_BY_STATE[state] || []).filter((action) => consoleState.features.sandbox_actions.includes(action));
}

function actionButtons(sandbox) {
  return actionsFor(sandbox.state)
    .map((action) => `<button class="quiet" data-action="${escapeHtml(action)}" data-id="${escapeHtml(sandbox.id)}">${escapeHtml(action)}</button>`)
    .join("");
}

export function renderSandboxRows(sandboxes) {
  const started = performance.now();
  const rows = sandboxes
    .map(
      (s) => `<tr>
<td><a href="#/sandboxes/${encodeURIComponent(s.id)}">${escapeHtml(s.id)}</a></td>
<td>${escapeHtml(s.name || "")}</td><td>${escapeHtml(s.template)}</td>
<td><span class="state ${escapeHtml(s.state)}">${escapeHtml(s.state)}</span></td>
<td title="${escapeHtml(s.created_at)}">${age(s.created_at)}</td><td>${escapeHtml(limits(s))}</td>
<td class="actions">${actionButtons(s)}<button class="danger" data-action="delete" data-id="${escapeHtml(s.id)}">Delete</button></td></tr>`,
    )
    .join("");
  const body = document.getElementById("sandbox-rows");
  body.innerHTML = rows || `<tr><td colspan="7" class="muted">No sandboxes yet.</td></tr>`;
  document.getElementById("sandbox-count").textContent = `${sandboxes.length} sandbox${sandboxes.length === 1 ? "" : "es"}`;
  void body.offsetHeight; // include layout in the measurement
  consoleState.lastListRenderMs = performance.now() - started;
}

function showSandboxes() {
  main.innerHTML = `<h1>Sandboxes <span id="sandbox-count" class="muted"></span></h1>
<form id="create" class="toolbar card">
  <label>Template <select name="template"></select></label>
  <label>Name <input name="name" placeholder="optional"></label>
  <label>CPU <input name="cpu" type="number" step="0.1" min="0.1" placeholder="default"></label>
  <label>Memory MiB <input name="memory_mb" type="number" min="16" placeholder="default"></label>
  <label>Lifetime s <input name="timeout" type="number" min="1" placeholder="none"></label>
  <button type="submit">Create sandbox</button>
</form>
<table class="sandboxes"><colgroup><col class="id"><col class="name"><col class="template"><col class="state"><col class="age"><col class="limits"><col class="actions"></colgroup>
<thead><tr><th>ID</th><th>Name</th><th>Template</th><th>State</th><th>Age</th><th>Limits</th><th></th></tr></thead>
<tbody id="sandbox-rows"></tbody></table>`;
  let stopped = false;
  let timer = 0;
  const refresh = async () => {
    clearTimeout(timer);
    try {
      const { sandboxes } = await api("GET", "/sandboxes");
      if (stopped) return;
      sandboxes.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
      renderSandboxRows(sandboxes);
    } catch (error) {
      if (!stopped) toast(error.message);
    }
    if (!stopped) timer = setTimeout(refresh, document.hidden ? POLL_MS * 5 : POLL_MS);
  };
  api("GET", "/templates").then(({ templates }) => {
    document.querySelector("#create select").innerHTML = templates
      .map((t) => `<option value="${escapeHtml(t.name)}">${escapeHtml(t.name)}</option>`)
      .join("");
  });
  document.getElementById("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = { template: form.get("template") || undefined };
    if (form.get("name")) body.name = form.get("name");
    for (const field of ["cpu", "memory_mb", "timeout"]) {
      if (form.get(field)) body[field] = Number(form.get(field));
    }
    const button = event.target.querySelector("button");
    button.disabled = true;
    try {
      const created = await api("POST", "/sandboxes", body);
      toast(`Created ${created.id}`);
      refresh();
    } catch (error) {
      toast(error.message);
    } finally {
      button.disabled = false;
    }
  });
  document.getElementById("sandbox-rows").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, id } = button.dataset;
    if (action === "delete" && !confirm(`Delete ${id}? Its files and processes are gone for good.`)) return;
    button.disabled = true;
    try {
      if (action === "delete") await api("DELETE", `/sandboxes/${encodeURIComponent(id)}?force=true`);
      else await api("POST", `/sandboxes/${encodeURIComponent(id)}/${action}`, {});
      refresh();
    } catch (error) {
      toast(error.message);
      button.disabled = false;
    }
  });
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// --- templates -----------------------------------------------------------------------------

function showTemplates() {
  main.innerHTML = `<h1>Templates</h1><table><thead><tr><th>Name</th><th>Description</th><th>Source</th><th>Layers</th><th>Size</th><th>Created</th><th></th></tr></thead><tbody id="template-rows"></tbody></table>`;
  const rows = document.getElementById("template-rows");
  const load = () =>
    api("GET", "/templates")
      .then(({ templates }) => {
        rows.innerHTML = templates
          .map(
            (t) => `<tr><td>${escapeHtml(t.name)}</td><td>${escapeHtml(t.description || "")}</td><td>${escapeHtml(t.source || "built-in")}</td>
<td>${t.layers?.length || ""}</td><td>${t.size ? humanBytes(t.size) : ""}</td><td>${escapeHtml((t.created_at || "").replace("T", " ").slice(0, 19))}</td>
<td class="actions">${t.source ? `<button class="danger" data-template="${escapeHtml(t.name)}">Delete</button>` : ""}</td></tr>`,
          )
          .join("");
      })
      .catch((error) => toast(error.message));
  rows.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-template]");
    if (!button || !confirm(`Delete template ${button.dataset.template}?`)) return;
    try {
      await api("DELETE", `/templates/${encodeURIComponent(button.dataset.template)}`);
      load();
    } catch (error) {
      toast(error.message);
    }
  });
  load();
  return () => {};
}

start().catch((error) => {
  main.innerHTML = `<p class="error">${escapeHtml(error.message)}</p>`;
});
