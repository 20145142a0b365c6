"""The ``workspace`` command line, shipped with the SDK (``pip install "workspace-sdk[cli]"``).

Client verbs (``ls``, ``exec``, ``shell``, ``cp``...) talk to any Workspace server through the
SDK. Other installed packages add verbs through the ``workspace.cli`` entry-point group: the
server package adds ``serve`` and ``openapi``.

Start-up time matters (``workspace exec ID -- true`` is meant to take well under 300 ms), so
modules import what they need when a verb runs, not here. It is a package of its own, not
``workspace_sdk.cli``, because importing a submodule runs ``workspace_sdk/__init__.py`` (and
imports httpx) before ``main`` could stop httpx from importing its own command line.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point."""
    # httpx imports its own command line (click, rich, pygments: ~100 ms) whenever those are
    # installed, which they are next to this CLI. The SDK never uses it; an import that
    # fails makes httpx skip it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        from workspace_cli.app import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("typer", "rich", "click"):
            raise
        sys.stderr.write("error: the workspace command needs its extra: pip install 'workspace-sdk[cli]'\n")
        raise SystemExit(2) from None

    run(sys.argv[1:])
