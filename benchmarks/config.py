"""How much to measure: iteration counts for a full run and for `--quick`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmarks.stats import MIB


@dataclass(frozen=True)
class Config:
    lifecycle_iterations: int = 30
    lifecycle_warmup: int = 2
    run_iterations: int = 300
    run_warmup: int = 20
    cpu_accounting_runs: int = 200
    stream_bytes: int = 256 * MIB
    stream_reps: int = 2
    small_file_reps: int = 30
    large_file_bytes: int = 256 * MIB
    large_file_reps: int = 2
    pty_keystrokes: int = 100
    cli_runs: int = 30
    cli_warmup: int = 3
    idle_sandboxes: int = 100
    idle_settle_seconds: float = 3.0
    concurrency_clients: int = 20
    concurrency_seconds: float = 10.0
    runc_iterations: int = 20
    podman_iterations: int = 10
    profile_runs: int = 500
    parallel_setup: int = 4  # clients creating/deleting sandboxes in bulk

    @staticmethod
    def quick() -> Config:
        """About a minute: the same measurements with fewer iterations."""
        return Config(
            lifecycle_iterations=10,
            lifecycle_warmup=1,
            run_iterations=100,
            run_warmup=10,
            cpu_accounting_runs=100,
            stream_reps=1,
            small_file_reps=10,
            large_file_reps=1,
            pty_keystrokes=30,
            cli_runs=10,
            cli_warmup=1,
            idle_sandboxes=20,
            idle_settle_seconds=2.0,
            concurrency_seconds=3.0,
            runc_iterations=8,
            podman_iterations=3,
            profile_runs=200,
        )

    def with_overrides(self, **changes: int | float | None) -> Config:
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]
