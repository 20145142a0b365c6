"""The peak-RSS measurement against a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.procfs import RssSampler

MIB = 1 << 20
ALLOCATE_AND_FREE = """
import sys
print("ready", flush=True)
sys.stdin.readline()
block = bytearray(b"x") * (64 << 20)  # written, so every page is resident
del block  # freed (munmap) before the measurement ends: only the peak remembers it
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="resetting another process's VmHWM needs root")
def test_peak_growth_sees_memory_freed_before_the_end_without_sampling() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", ALLOCATE_AND_FREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        with RssSampler(child.pid) as sampler:
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "done"
        assert not sampler._thread.is_alive() and sampler._thread.ident is None  # the kernel kept the peak
        assert 60 * MIB <= sampler.peak_growth < 96 * MIB
    finally:
        child.kill()
        child.wait()
