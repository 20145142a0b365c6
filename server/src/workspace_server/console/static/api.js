// The REST API as the console uses it: same origin, the session cookie (no key in scripts).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body instanceof Blob) {
    init.body = body;
    init.headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch("/api/v1" + path, init);
  if (response.status === 401) onUnauthorized();
  if (!response.ok) {
    let envelope = {};
    try {
      envelope = await response.json();
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, envelope.code || "HTTP_" + response.status, envelope.message || response.statusText);
  }
  return response.status === 204 ? null : response.json();
}

export const escapeHtml = (value) =>
  String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export function age(timestamp) {
  if (!timestamp) return "-";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (seconds >= 86400) return Math.floor(seconds / 86400) + "d";
  if (seconds >= 3600) return Math.floor(seconds / 3600) + "h";
  if (seconds >= 60) return Math.floor(seconds / 60) + "m";
  return seconds + "s";
}

export function limits(sandbox) {
  const parts = [`cpu ${sandbox.cpu ?? "-"}`, `mem ${sandbox.memory_mb ?? "-"} MiB`, `disk ${sandbox.disk_mb ?? "-"} MiB`];
  if (sandbox.network) parts.push("network");
  return parts.join(", ");
}

export function humanBytes(size) {
  if (size < 1024) return size + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = "B";
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return value.toFixed(1) + " " + unit;
}

export function toast(message) {
  const element = document.getElementById("toast");
  element.textContent = message;
  element.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (element.hidden = true), 4000);
}
