// A sandbox terminal: xterm.js over the PTY WebSocket (binary frames both ways, JSON control
// frames). The browser sends the session cookie and its Origin with the handshake.

const encoder = new TextEncoder();

function stylesheet(href) {
  if (document.querySelector(`link[href="${href}"]`)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const link = Object.assign(document.createElement("link"), { rel: "stylesheet", href });
    link.onload = resolve;
    link.onerror = () => reject(new Error(`could not load ${href}`));
    document.head.append(link);
  });
}

export async function openTerminal(container, sandboxId, onEnd) {
  // Loaded with the first terminal, not with the console's first page.
  const [{ Terminal }, { FitAddon }] = await Promise.all([
    import("/ui/vendor/xterm.mjs"),
    import("/ui/vendor/addon-fit.mjs"),
    stylesheet("/ui/vendor/xterm.css"),
  ]);
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, fontFamily: "ui-monospace, Menlo, Consolas, monospace" });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(container);
  fit.fit();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams({ cols: term.cols, rows: term.rows });
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/sandboxes/${encodeURIComponent(sandboxId)}/pty?${query}`);
  socket.binaryType = "arraybuffer";
  const session = { term, socket, ptyId: null, exitCode: null };
  const send = (data) => socket.readyState === WebSocket.OPEN && socket.send(data);

  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    const frame = JSON.parse(event.data);
    if (frame.type === "ready") {
      session.ptyId = frame.pty_id;
      // The size may have changed between the request and now.
      send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
    } else if (frame.type === "exit") {
      session.exitCode = frame.code;
      term.write(`\r\n\x1b[2m[shell exited with status ${frame.code}]\x1b[0m\r\n`);
      onEnd?.(session);
    } else if (frame.type === "error") {
      term.write(`\r\n\x1b[31m[${frame.code}: ${frame.message}]\x1b[0m\r\n`);
    }
  });
  socket.addEventListener("close", () => term.write("\r\n\x1b[2m[disconnected]\x1b[0m\r\n"));

  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
  // Copy: Ctrl+Shift+C (Ctrl+C stays the interrupt key). Paste: the browser's own paste
  // (Ctrl+Shift+V, Ctrl+V, the context menu) reaches xterm.js's input as a paste event.
  term.attachCustomKeyEventHandler((event) => {
    if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
    if (event.code === "KeyC") {
      if (term.hasSelection()) navigator.clipboard?.writeText(term.getSelection());
      return false;
    }
    return event.code !== "KeyV"; // leave it to the browser, which fires paste
  });
  const resizeObserver = new ResizeObserver(() => fit.fit());
  resizeObserver.observe(container);
  term.focus();

  session.dispose = () => {
    resizeObserver.disconnect();
    socket.close(); // detaches; the shell is killed explicitly below when wanted
    term.dispose();
  };
  session.kill = () => send(JSON.stringify({ type: "kill" }));
  return session;
}
