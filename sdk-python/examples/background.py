"""A background server process: start it, disconnect, reconnect with replay, send it input.

The process belongs to the sandbox, not to the connection: leaving (or losing) the
connection never stops it, and its output is kept, so a later connection, from this
client or another one, replays what was missed from any offset and follows on live.

Reads WORKSPACE_API_URL / WORKSPACE_API_KEY from the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds concurrent.py, which would shadow the standard library's `concurrent`
# package (asyncio imports it) while the folder is on sys.path, as it is for
# `python examples/<name>.py`. Drop the folder from the path before importing anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from workspace_sdk import CreateSandboxParams, RunCommandOptions, StdoutEvent, WorkspaceClient

# A tiny line-oriented "server": it greets, then answers each line it reads on stdin.
SERVER = """
import sys
print("server ready", flush=True)
for line in sys.stdin:
    print("you said: " + line.strip(), flush=True)
print("stdin closed, bye", flush=True)
"""


def main() -> None:
    with WorkspaceClient() as client:
        sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
        try:
            # 1. Start it in the background, with stdin open and a tag to find it by.
            server = client.process.start(
                sandbox.id, "python3", RunCommandOptions(args=["-c", SERVER]), tag="chat", stdin=True
            )
            print(f"started pid {server.pid} (tag {server.tag!r})")
            for event in server:  # follow until the greeting, then stop following
                if isinstance(event, StdoutEvent):
                    print(f"[offset {event.offset}] {event.data}", end="")
                    break
            server.disconnect()  # the process keeps running
            resume_at = server.offset

            # 2. While nobody follows, it keeps working: its output is kept in its log.
            client.process.send_stdin(sandbox.id, "chat", "hello\n")

            # 3. Later, and from another client: reconnect by tag, replaying from where we left.
            with WorkspaceClient() as other:
                again = other.process.connect(sandbox.id, "chat", offset=resume_at)
                events = iter(again)
                replayed = next(events)
                assert isinstance(replayed, StdoutEvent)
                print(f"replayed from offset {resume_at}: {replayed.data}", end="")
                again.send_stdin("how are you?\n")
                for event in events:
                    if isinstance(event, StdoutEvent):
                        print(f"live: {event.data}", end="")
                        if "how are you" in event.data:
                            again.close_stdin()  # EOF: the server says goodbye and exits
                    elif event.type == "exit":
                        print(f"exited with code {event.code}")

                # Everything it wrote is still there, from offset 0.
                replay = other.process.connect(sandbox.id, "chat")
                full = "".join(e.data for e in replay if isinstance(e, StdoutEvent))
                print(f"whole output, replayed:\n{full}", end="")
        finally:
            client.sandbox.delete(sandbox.id, force=True)


if __name__ == "__main__":
    main()
