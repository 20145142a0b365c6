"""`workspace exec ID -- true` as a whole process (interpreter start, imports, one streamed
command), beside the start-up of bare Python and of `import workspace_sdk`, same run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.measure import BASELINES, latency
from benchmarks.report import Metric
from benchmarks.server import Server

CLI = "Command line"
WORKSPACE = Path(sys.executable).with_name("workspace")


def timed_process(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    return time.perf_counter() - started


def cli_startup(server: Server, cfg: Config) -> list[Metric]:
    env = {**os.environ, "WORKSPACE_API_URL": server.url}
    env.pop("WORKSPACE_API_KEY", None)
    commands = {
        "cli.exec_true": [str(WORKSPACE), "exec", "", "--", "true"],
        "base.python": [sys.executable, "-c", "pass"],
        "base.python_sdk": [sys.executable, "-c", "import workspace_sdk"],
    }
    samples: dict[str, list[float]] = {key: [] for key in commands}
    with Api(server.url) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        commands["cli.exec_true"][2] = sandbox_id
        try:
            # Interleaved, so a busy moment of the machine hits all three alike.
            for i in range(cfg.cli_warmup + cfg.cli_runs):
                for key, argv in commands.items():
                    seconds = timed_process(argv, env)
                    if i >= cfg.cli_warmup:
                        samples[key].append(seconds)
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    return [
        latency(
            "cli.exec_true",
            CLI,
            "`workspace exec ID -- true`, whole process",
            samples["cli.exec_true"],
            baselines=("base.python", "base.python_sdk"),
        ),
        latency("base.python", BASELINES, "`python -c pass`", samples["base.python"], short="python"),
        latency(
            "base.python_sdk",
            BASELINES,
            "`python -c 'import workspace_sdk'`",
            samples["base.python_sdk"],
            short="import SDK",
        ),
    ]
