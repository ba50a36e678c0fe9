"""stablecnn.kernels.parallel: spans, the pool, split products, results independent of the
thread count."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from stablecnn import SGD, Adagrad, Adam, RMSprop
from stablecnn.kernels import parallel
from stablecnn.nn import zoo
from stablecnn.nn.layers import Conv2d, Linear, MaxPool2d, ReLU
from stablecnn.nn.losses import SoftmaxCrossEntropy


def blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def threads():
    """``threads(n)`` sets stablecnn's thread count; the test's end restores 1 and BLAS."""
    original = blas_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(1)
    if original:
        threadpool_limits(limits=original[0], user_api="blas")


@pytest.mark.parametrize("total", [0, 1, 5, 2**15, 2**16 + 3, 10**6 + 1])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_spans_cover_the_range_once(threads, total, n):
    threads(n)
    spans = parallel.spans(total, min_span=1000)
    assert spans[0][0] == 0 and spans[-1][1] == total
    assert all(a < b or total == 0 for a, b in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert len(spans) == max(1, min(n, total // 1000))


def test_run_waits_for_every_task_and_reraises(threads):
    threads(2)
    done = []

    def fail():
        raise KeyError("boom")

    def slow():
        threading.Event().wait(0.05)
        done.append(True)

    with pytest.raises(KeyError, match="boom"):
        parallel.run([fail, slow])
    assert done == [True]  # the other span finished before the error came out


def test_nested_spans_run_inline(threads):
    threads(2)
    seen = []

    def outer(a, b):
        seen.append(len(parallel.spans(10**6, 1)))  # inside a span: one span, no deadlock

    parallel.for_each_span(4, outer, min_span=1)
    assert seen == [1] * 4  # four pieces of one item, each with no nested split


@pytest.mark.parametrize("total, min_span", [(1, 1), (7, 1), (100, 3), (10**5, 1000)])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_for_each_span_visits_every_item_once(threads, total, min_span, n):
    threads(n)
    hits = np.zeros(total, np.int64)
    owners = set()

    def visit(a, b):
        hits[a:b] += 1  # spans never overlap, so no two threads write the same items
        owners.add(threading.get_ident())

    parallel.for_each_span(total, visit, min_span=min_span)
    assert (hits == 1).all()
    assert len(owners) <= n


def test_set_num_threads_rejects_bad_counts_and_sets_blas_to_one(threads):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive int"):
            parallel.set_num_threads(bad)
    threads(2)
    assert parallel.get_num_threads() == 2
    assert set(blas_threads()) <= {1}


def test_default_num_threads_env(monkeypatch):
    monkeypatch.setenv("STABLECNN_NUM_THREADS", "3")
    assert parallel.default_num_threads() == 3
    monkeypatch.setenv("STABLECNN_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="STABLECNN_NUM_THREADS"):
        parallel.default_num_threads()


@pytest.mark.parametrize("shape", [(100, 2704, 1024), (1024, 100, 300), (3, 7, 5), (300, 40, 64)])
def test_split_matmul_matches_one_product(threads, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    expected = a @ b
    threads(3)
    np.testing.assert_allclose(parallel.matmul(a, b), expected, rtol=1e-5, atol=1e-4)
    out = np.full((m, n), np.nan, np.float32)
    assert parallel.matmul(a.T.copy().T, b, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def run_layer(layer, x, dout_seed=1):
    out = layer.forward(x)
    dout = np.random.default_rng(dout_seed).standard_normal(out.shape).astype(x.dtype)
    dx = layer.backward(dout)
    return [out, dx, *(g.copy() for g in layer.grads.values())]


LAYERS = [
    ("conv rows", lambda: Conv2d(32, 16, 5, rng=np.random.default_rng(0)), (20, 32, 18, 18)),
    (
        "conv rows same",
        lambda: Conv2d(24, 8, 3, padding="same", rng=np.random.default_rng(0)),
        (6, 24, 11, 9),
    ),
    ("conv im2col", lambda: Conv2d(1, 32, 10, rng=np.random.default_rng(0)), (30, 1, 28, 28)),
    (
        "conv im2col strided",
        lambda: Conv2d(3, 8, (3, 2), stride=(2, 3), padding=1, rng=np.random.default_rng(0)),
        (9, 3, 17, 15),
    ),
    ("pool overlapping", lambda: MaxPool2d(2, stride=1), (40, 32, 19, 19)),
    ("pool one image", lambda: MaxPool2d(3, stride=2), (1, 64, 23, 20)),
    ("relu", ReLU, (64, 32, 19, 19)),
    ("linear", lambda: Linear(2704, 1024, rng=np.random.default_rng(0)), (100, 2704)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[row[0] for row in LAYERS])
def test_layers_agree_across_thread_counts(threads, name, make, shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    if name.startswith("pool"):
        x = np.round(x, 1)  # ties: the first maximum must win on every thread
    threads(1)
    one = run_layer(make(), x)
    for n in (2, 3):
        threads(n)
        many = run_layer(make(), x)
        for a, b in zip(one, many):  # products too: their blocks do not move with the threads
            np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: Adagrad(p, lr=0.01),
        lambda p: Adam(p, lr=1e-3),
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
        lambda p: RMSprop(p, lr=1e-3, centered=True, momentum=0.5),
    ],
    ids=["adagrad", "adam", "sgd", "rmsprop"],
)
def test_optimizer_spans_are_bit_identical(threads, make):
    """The update of a large parameter in spans equals the update in one piece, bit for bit."""
    results = []
    for n in (1, 2, 3):
        threads(n)
        rng = np.random.default_rng(0)
        param = rng.standard_normal(3 * parallel.MIN_SPAN + 7).astype(np.float32)
        grad = np.zeros_like(param)
        opt = make([("w", param, grad)])
        for _ in range(3):
            grad[...] = rng.standard_normal(param.shape)
            opt.step()
        results.append((param.copy(), {k: v.copy() for k, v in opt.state_dict().items()}))
    for param, state in results[1:]:
        np.testing.assert_array_equal(param, results[0][0])
        for key in state:
            np.testing.assert_array_equal(state[key], results[0][1][key])


def test_model1_training_step_agrees_across_thread_counts(threads):
    x = np.random.default_rng(0).random((50, 1, 28, 28), dtype=np.float32)
    y = np.arange(50) % 10
    params = []
    for n in (1, 2):
        threads(n)
        model, loss = zoo.build("md1", seed=0), SoftmaxCrossEntropy()
        opt = Adagrad(model.parameters(), lr=0.01)
        for _ in range(2):
            loss.forward(model.forward(x), y)
            model.backward(loss.backward(), need_input_grad=False)
            opt.step()
        params.append(model.state_dict())
    for key, value in params[0].items():
        np.testing.assert_allclose(params[1][key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("count", [1, 2, 5, 18])
def test_sum_in_order_is_the_same_at_any_thread_count(threads, count):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((count, 101, 300)).astype(np.float32)
    b = rng.standard_normal((count, 300, 32)).astype(np.float32)

    def part(i, out):
        np.matmul(a[i], b[i], out=out)

    expected = np.einsum("ikl,ilj->kj", a.astype(np.float64), b.astype(np.float64))
    results = []
    for n in (1, 2, 3):
        threads(n)
        got = parallel.sum_in_order(count, part, (101, 32), np.float32)
        assert got.shape == (101, 32) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
        results.append(got)
    for got in results[1:]:  # the parts, and the order they are added in, are fixed
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize(
    "start, stop, item, block",
    [(0, 19, 7600, 1 << 20), (3, 20, 100, 450), (0, 5, 1 << 21, 1 << 20), (4, 4, 8, 64)],
)
def test_blocks_cover_the_range_in_order(start, stop, item, block):
    got = parallel.blocks(start, stop, item, block)
    assert [i for a, z in got for i in range(a, z)] == list(range(start, stop))
    assert all(z - a >= 1 and ((z - a) * item <= block or z - a == 1) for a, z in got)


@pytest.mark.parametrize(
    "total, least, most, align, parts, count",
    [
        (19, 1, 1, 1, 12, 19),  # the cache needs 19 blocks
        (19, 2, 4, 1, 6, 6),  # 5 needed, 6 aimed at
        (19, 2, 4, 1, 12, 8),  # 12 aimed at, but blocks of 2 allow only 9: the even count below
        (18, 1, 3, 1, 6, 6),
        (1024, 32, None, 16, 12, 12),
        (2704, 82, None, 16, 12, 12),
        (1024, 97, None, 16, 12, 8),
        (10, 81, None, 16, 12, 1),
        (1000, 1, 84, 1, 1, 12),
        (14, 4, 100, 1, 12, 2),
        (14, 4, 3, 1, 12, 5),
        (5, 1, None, 1, 12, 4),
        (1, 7, 1, 1, 12, 1),
        (0, 1, None, 1, 12, 0),
    ],
)
def test_grid_is_fixed_by_its_arguments(threads, total, least, most, align, parts, count):
    grids = []
    for n in (1, 2, 3):
        threads(n)
        grids.append(parallel.grid(total, least, most, align, parts))
    assert grids[1] == grids[0] and grids[2] == grids[0]  # not a function of the thread count
    got = grids[0]
    assert len(got) == count
    assert [i for a, z in got for i in range(a, z)] == list(range(total))
    assert all(a % align == 0 for a, _ in got)
    if most is not None:
        assert all(z - a <= most for a, z in got)
    if len(got) > (-(-total // most) if most else 1):  # split further than the cache needs:
        assert all(z - a >= least for a, z in got)  # then only into blocks worth a call


@pytest.mark.parametrize("sizes", [[1] * 12, [3, 1, 1, 1, 1, 1, 4], [5], [2] * 8 + [3]])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_for_each_block_computes_every_block_whole_once_on_at_most_n_threads(
    threads, monkeypatch, sizes, n
):
    threads(n)
    blocks = [(i, sum(sizes[:i]), sum(sizes[: i + 1])) for i in range(len(sizes))]
    hits = [0] * len(sizes)
    owners = set()

    def visit(i, a, z):
        hits[i] += 1
        owners.add(threading.get_ident())

    parallel.for_each_block(blocks, visit, sizes)  # on the pool
    assert hits == [1] * len(sizes) and len(owners) <= min(n, len(sizes))
    # with the tasks run one after the other, the first claims every block, in order
    order, tasks = [], []

    def tasks_in_turn(given):
        tasks.append(len(given))
        for task in given:
            task()

    monkeypatch.setattr(parallel, "run", tasks_in_turn)
    parallel.for_each_block(blocks, lambda i, a, z: order.append(i), sizes)
    assert order == list(range(len(sizes)))
    assert tasks == ([min(n, len(sizes))] if min(n, len(sizes)) > 1 else [])
    order.clear()
    parallel.for_each_block(
        blocks, lambda i, a, z: order.append(i), sizes, min_run=sum(sizes) / 2 + 1
    )  # too little work for two threads: all in the caller, no task handed out
    assert order == list(range(len(sizes))) and len(tasks) <= 1


def stuck_until_the_others_finish(total_pieces):
    """A piece function for 2 threads: the first piece waits until every other piece is done.
    Pieces claimed in turn finish (the other thread takes the rest); pieces fixed per thread
    would wait out the timeout, the stuck thread's own run undone."""
    done, released = [], threading.Event()
    lock = threading.Lock()

    def piece(i):
        if i == 0:
            assert released.wait(timeout=30), "the other thread did not take the stuck one's work"
            return
        with lock:
            done.append(i)
            if len(done) == total_pieces - 1:
                released.set()

    return piece, done


def test_a_thread_held_up_does_not_hold_up_the_blocks_of_the_others(threads):
    """The load work (issue 16): a thread whose core is taken by another process does fewer
    blocks; here one is held up for good on block 0 and the other does blocks 1 to 11."""
    threads(2)
    piece, done = stuck_until_the_others_finish(12)
    parallel.for_each_block([(i, i + 1) for i in range(12)], lambda a, z: piece(a))
    assert sorted(done) == list(range(1, 12))


def test_a_thread_held_up_does_not_hold_up_the_spans_of_the_others(threads):
    threads(2)
    total = 2 * parallel.PIECES
    piece, done = stuck_until_the_others_finish(total)
    parallel.for_each_span(total, lambda a, z: piece(a), min_span=parallel.PIECES)
    assert sorted(done) == list(range(1, total))


def test_after_an_error_no_new_piece_is_claimed(threads, monkeypatch):
    threads(2)
    calls = []

    def piece(a, z):
        calls.append(a)
        if a == 0:
            raise KeyError("boom")

    def each_task_then_the_first_error(tasks):  # what run does, one task after the other
        errors = []
        for task in tasks:
            try:
                task()
            except KeyError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    monkeypatch.setattr(parallel, "run", each_task_then_the_first_error)
    with pytest.raises(KeyError, match="boom"):
        parallel.for_each_block([(i, i + 1) for i in range(12)], piece)
    assert calls == [0]  # the second task found the failure and claimed nothing


def conv_case(make, shape, need_input_grad=True):
    def compute(x):
        layer = make()
        out = layer.forward(x)  # training: the window copies and products of the backward too
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
        dx = layer.backward(dout, need_input_grad=need_input_grad)
        inference = layer.forward(x, training=False)
        return [
            out,
            *([dx] if need_input_grad else []),
            layer.grads["weight"].copy(),
            layer.grads["bias"].copy(),
            inference,
        ]

    return compute, shape


def linear_case(make, shape):
    def compute(x):
        layer = make()
        out = layer.forward(x)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
        dx = layer.backward(dout)
        return [out, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()]

    return compute, shape


def matmul_case(m, k, n):
    def compute(x):
        b = np.random.default_rng(3).standard_normal((k, n)).astype(np.float32)
        return [parallel.matmul(x, b), parallel.matmul(b.T.copy(), x.T.copy())]

    return compute, (m, k)


def seeded(layer, *args, **kwargs):
    return lambda: layer(*args, rng=np.random.default_rng(0), **kwargs)


PRODUCTS = {
    # Model 1's products at batch 100 (its first conv's input gradient, which training skips,
    # too), then non-square shapes: a rows conv with a non-square kernel and padding, a strided
    # im2col conv wide enough for its input gradient's channels to be cut, a non-square Linear
    "md1 conv1 im2col": conv_case(seeded(Conv2d, 1, 32, 10), (100, 1, 28, 28)),
    "md1 conv2 rows": conv_case(seeded(Conv2d, 32, 16, 5), (100, 32, 18, 18)),
    "md1 linear1": linear_case(seeded(Linear, 2704, 1024), (100, 2704)),
    "md1 matmul": matmul_case(100, 2704, 1024),
    "conv rows non-square": conv_case(
        seeded(Conv2d, 24, 8, (3, 4), padding=(1, 2)), (40, 24, 17, 11)
    ),
    "conv im2col strided": conv_case(
        seeded(Conv2d, 32, 32, 3, stride=(2, 1), padding=1), (64, 32, 15, 13)
    ),
    "linear non-square": linear_case(seeded(Linear, 1000, 600), (50, 1000)),
    "matmul rows": matmul_case(1500, 256, 100),
}


@pytest.mark.parametrize("name", list(PRODUCTS))
def test_products_are_bit_identical_at_1_2_and_3_threads(threads, monkeypatch, name):
    """Every product kernel (conv forward, backward and inference on both paths, Linear forward
    and backward, parallel.matmul) gives the same bits at any thread count: its blocks are a
    grid fixed by the shapes, not by where the threads fall (see stablecnn.kernels.parallel)."""
    compute, shape = PRODUCTS[name]
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    grids = []
    real = parallel.for_each_block

    def spy(blocks, fn, *args, **kwargs):
        grids.append(list(blocks))
        real(blocks, fn, *args, **kwargs)

    monkeypatch.setattr(parallel, "for_each_block", spy)
    results = []
    for n in (1, 2, 3):
        threads(n)
        grids.clear()
        results.append(compute(x))
        if n == 1:
            one_thread_grids = list(grids)
        assert grids == one_thread_grids  # the same blocks at every thread count
    assert max(len(g) for g in grids) >= 3  # large enough for every thread to take a block
    for many in results[1:]:
        for got, expected in zip(many, results[0]):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected)
