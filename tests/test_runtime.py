"""stablecnn.kernels.runtime: the allocator setting that keeps large freed arrays for reuse."""

import json
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


# -- the defaults a program gets when it configures nothing (issue 16) ---------------------------
CPUS = {2}


def expected_threads(environ=None):
    from stablecnn.kernels import parallel

    return parallel.default_num_threads(environ or {})


def test_nothing_set_gives_the_command_lines_threads():
    d = runtime.decide({}, [2], CPUS)
    assert (d.threads, d.blas_to_one, d.keep_freed_memory) == (expected_threads(), True, True)
    d = runtime.decide({"STABLECNN_NUM_THREADS": "3"}, [2], CPUS)
    assert (d.threads, d.blas_to_one) == (3, True)
    d = runtime.decide({"OPENBLAS_NUM_THREADS": " "}, [2], CPUS)  # empty: not set
    assert d.blas_to_one


@pytest.mark.parametrize("name", runtime.BLAS_THREAD_VARS)
def test_blas_threads_the_user_set_are_kept(name):
    d = runtime.decide({name: "2"}, [2], CPUS)
    assert not d.blas_to_one and d.threads == 1  # BLAS's two threads have the cores
    assert name in d.reason
    d = runtime.decide({name: "1"}, [1], CPUS)
    assert not d.blas_to_one and d.threads == expected_threads()  # one BLAS thread: our pool


def test_blas_threads_a_program_set_are_kept():
    """A count that is not one per CPU was set by someone (threadpoolctl,
    openblas_set_num_threads): left alone; stablecnn's pool runs only beside a 1-thread BLAS."""
    d = runtime.decide({}, [1], CPUS)
    assert not d.blas_to_one and d.threads == expected_threads()
    d = runtime.decide({}, [3], CPUS)
    assert not d.blas_to_one and d.threads == 1 and "3" in d.reason
    d = runtime.decide({}, [4, 2], {2, 4})  # either CPU count is a BLAS's own default
    assert d.blas_to_one
    d = runtime.decide({}, [], CPUS)  # no BLAS found: nothing to set
    assert not d.blas_to_one and d.threads == expected_threads()


@pytest.mark.parametrize(
    "environ, keep",
    [
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, False),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, False),
        ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, True),
        ({"STABLECNN_KEEP_FREED_MEMORY": "off"}, False),
        ({"STABLECNN_KEEP_FREED_MEMORY": "1"}, True),
    ],
)
def test_the_allocator_settings_the_user_made_are_kept(environ, keep):
    assert runtime.decide(environ, [2], CPUS).keep_freed_memory is keep


def test_a_bad_thread_count_is_named():
    with pytest.raises(ValueError, match="STABLECNN_NUM_THREADS must be a positive integer"):
        runtime.decide({"STABLECNN_NUM_THREADS": "two"}, [2], CPUS)


# A fresh process: what import and the first forward pass leave, as JSON. argv[1] is Python code
# run after the import and before the first forward pass, argv[2] after it.
FIRST_USE = textwrap.dedent("""
    import json, sys
    from threadpoolctl import threadpool_info, threadpool_limits
    import numpy as np
    import stablecnn
    from stablecnn.kernels import parallel, runtime
    def state():
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        return {"threads": parallel.get_num_threads(), "blas": blas}
    out = {"after_import": state()}
    exec(sys.argv[1])
    model = stablecnn.nn.zoo.build("md1", seed=0)
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    y = np.arange(16) % 10
    loss = stablecnn.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward(), need_input_grad=False)
    out["after_forward"] = state()
    exec(sys.argv[2])
    model.forward(x)
    out["after_second"] = state()
    out["grads"] = {n: g.tobytes().hex() for n, _, g in model.parameters()}
    print(json.dumps(out))
""")
BLAS_ENV = [*runtime.BLAS_THREAD_VARS, "STABLECNN_NUM_THREADS"]


def first_use(before="", after="", **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    environ.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_USE, before, after],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_changes_nothing_and_the_first_forward_pass_sets_the_defaults():
    out = first_use()
    default = out["after_import"]["blas"][0]
    assert out["after_import"]["threads"] == 1
    cpus = {os.cpu_count(), len(os.sched_getaffinity(0))}
    if default not in cpus:
        pytest.skip(f"this BLAS starts with {default} threads, not one per CPU {cpus}")
    assert out["after_forward"] == {"threads": expected_threads(), "blas": [1]}
    # the program sets BLAS after the first pass: kept, the defaults are not applied again
    out = first_use(after="threadpool_limits(limits=2, user_api='blas')")
    assert out["after_second"]["blas"] == [2]


def test_a_users_blas_setting_and_configure_are_kept():
    out = first_use(OPENBLAS_NUM_THREADS="2")
    assert out["after_forward"] == {"threads": 1, "blas": [2]}
    out = first_use(before="threadpool_limits(limits=1, user_api='blas')")
    assert out["after_forward"] == {"threads": expected_threads(), "blas": [1]}
    out = first_use(before="runtime.configure(threads=1)")
    assert out["after_forward"] == {"threads": 1, "blas": [1]}


def test_the_defaults_give_the_same_bits_as_one_thread():
    """Whatever thread count the defaults pick, a training step's gradients are bit-identical
    to those of one thread (STABLECNN_NUM_THREADS=1) and of three."""
    one = first_use(STABLECNN_NUM_THREADS="1")
    assert one["after_forward"]["threads"] == 1
    if one["after_forward"]["blas"] != [1]:
        pytest.skip("this BLAS does not start with one thread per CPU: the defaults leave it")
    for env in ({}, {"STABLECNN_NUM_THREADS": "3"}):
        many = first_use(**env)
        assert many["after_forward"]["threads"] == expected_threads(env)
        assert many["grads"] == one["grads"]
