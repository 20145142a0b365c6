"""The goals from the benchmark issue: checked and reported (PASS/MISS), never asserted."""

from __future__ import annotations

from benchmarks.report import Target

TARGETS: list[Target] = [
    Target(
        "Sandbox.create() → commands.run('true') via the e2b SDK p50, warm pool",
        "e2b.create_to_first",
        20,
        at_most=True,
    ),
    Target(
        "e2b commands.run('true') p50 vs our SDK's process.run",
        "e2b.run_true",
        2,
        at_most=True,
        baseline="e2b.sdk_run_true",
    ),
    Target("create → first command p50, warm pool", "lifecycle.pool.create_to_first", 10, at_most=True),
    Target("create → first command p50, cold (--pool-size 0)", "lifecycle.cold.create_to_first", 50, at_most=True),
    Target("create → first command p50, imported image, warm pool", "templates.warm_to_first", 10, at_most=True),
    Target("cold create → first command, image over default (p50s)", "templates.cold_ratio", 1.3, at_most=True),
    Target("import of a 100 MB docker-save archive p50 (ms)", "templates.import_100mb", 5000, at_most=True),
    Target("unchanged rebuild p50 (ms)", "templates.build_unchanged", 1000, at_most=True),
    Target("disk added by 10 sandboxes of a 500 MB template (MiB)", "templates.du_10_sandboxes", 10, at_most=True),
    Target("idle memory per image sandbox (MiB)", "templates.idle_memory", 16, at_most=True),
    Target("pause p50", "lifecycle_ops.pause", 10, at_most=True),
    Target("resume p50", "lifecycle_ops.resume", 10, at_most=True),
    Target("stop p50", "lifecycle_ops.stop", 50, at_most=True),
    Target(
        "start → first command, over cold create → first command (p50)",
        "lifecycle_ops.start_over_cold",
        20,
        at_most=True,
    ),
    Target("fork with 100 MB changed p50", "lifecycle_ops.fork", 1000, at_most=True),
    Target("memory of a stopped sandbox", "lifecycle_ops.stopped_memory", 0, at_most=True),
    Target("process.run('true') p50 vs bare fork+exec", "run.true", 2, at_most=True, baseline="base.fork_exec.true"),
    Target("`workspace exec ID -- true`, whole process p50", "cli.exec_true", 300, at_most=True),
    Target("SSE stdout throughput, 256 MiB", "stream.throughput", 200, at_most=False),
    Target("process.start → pid p50, over process.run('true') p50 (ms)", "bg.start_over_run", 1, at_most=True),
    Target("connect with a replay of 1 MiB p50 (ms)", "bg.replay_1mib", 20, at_most=True),
    Target("send_stdin round trip through cat p50 (ms)", "bg.stdin_echo", 3, at_most=True),
    Target("file watch: write → event p50 (ms)", "bg.watch", 10, at_most=True),
    Target("background output vs run_stream (MB/s ratio)", "bg.throughput", 0.9, at_most=False, baseline="bg.stream"),
    Target("proxied GET p50, over process.run('true') p50 (ms)", "ports.get_over_run", 1, at_most=True),
    Target("download through the proxy (MB/s)", "ports.download", 300, at_most=False),
    Target("file write, 256 MiB", "files.write_large", 300, at_most=False),
    Target("file read, 256 MiB", "files.read_large", 300, at_most=False),
    Target("server RSS growth during the 256 MiB write", "files.write_large.rss", 64, at_most=True),
    Target("server RSS growth during the 256 MiB read", "files.read_large.rss", 64, at_most=True),
    Target("NFS write, 256 MiB (userspace client)", "nfs.write", 100, at_most=False),
    Target("NFS read, 256 MiB (userspace client)", "nfs.read", 100, at_most=False),
    Target("export added at sandbox start (create p50, NFS on − off)", "nfs.create_added", 20, at_most=True),
    Target("idle memory per sandbox (cgroup + server RSS growth)", "mem.idle_per_sandbox", 16, at_most=True),
    Target(
        "create → first command vs `podman run` (warm pool)",
        "lifecycle.pool.create_to_first",
        10,
        at_most=False,
        baseline="base.podman.run",
        speedup=True,
    ),
    Target(
        "create → first command vs `podman run` (cold)",
        "lifecycle.cold.create_to_first",
        10,
        at_most=False,
        baseline="base.podman.run",
        speedup=True,
    ),
    Target(
        "process.run('true') vs `podman exec`", "run.true", 10, at_most=False, baseline="base.podman.exec", speedup=True
    ),
]
