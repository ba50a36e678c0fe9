"""stablecnn.kernels.runtime: the allocator setting that keeps large freed arrays for reuse."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from stablecnn.kernels import runtime

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocates and frees arrays of 1-17 MiB, like a training step, and prints the page faults a
# round costs once the process has warmed up.
ROUNDS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from stablecnn.kernels import runtime
    applied = runtime.keep_freed_memory()
    def one_round():
        sizes = (3 << 20, 5 << 20, 9 << 20, 17 << 20, 1 << 20)
        arrays = [np.ones(size // 4, np.float32) for size in sizes]
        del arrays
    for _ in range(3):
        one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        one_round()
    print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


def faults_per_round(setting: str) -> tuple[bool, float]:
    env = {**os.environ, "STABLECNN_KEEP_FREED_MEMORY": setting}
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's mallopt")
def test_freed_arrays_are_reused_without_page_faults():
    applied, faults = faults_per_round("1")
    off_applied, off_faults = faults_per_round("0")
    assert applied and not off_applied
    # 35 MiB touched a round: ~9,000 fresh 4 KiB pages if unmapped and mapped again.
    assert off_faults > 1000, "glibc reused the memory anyway: the test no longer shows the cost"
    assert faults < 50


def test_idempotent_and_a_bool():
    first = runtime.keep_freed_memory()
    assert isinstance(first, bool)
    assert runtime.keep_freed_memory() is first
    assert first == (GLIBC and os.environ.get("STABLECNN_KEEP_FREED_MEMORY", "1") != "0")
