#!/usr/bin/env bash
# The main job: the service with the embedded local runtime, then a demo against it.
# The service keeps running in the foreground afterwards (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8080}
DATA_DIR=${DATA_DIR:-$PWD/data}
URL="http://127.0.0.1:$PORT"
.venv/bin/workspace serve --host 127.0.0.1 --port "$PORT" --data-dir "$DATA_DIR" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 300); do
  curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "the server failed to start" >&2; exit 1; }
  sleep 0.1
done
echo "== demo: sdk-python/examples/basic.py against $URL"
WORKSPACE_API_URL=$URL .venv/bin/python sdk-python/examples/basic.py
echo "== Workspace is serving at $URL (data in $DATA_DIR). Ctrl-C to stop."
wait $SERVER
