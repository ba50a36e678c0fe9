"""Sequential and Model 1: shapes, whole-model gradient checks, parameters across training steps,
summary, repr, batched prediction."""

import numpy as np
import pytest
from support.gradcheck import numerical_grad, numerical_grad_at, rel_error

from stablecnn import (
    Adagrad,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from stablecnn.errors import ShapeError
from stablecnn.nn import zoo


def test_md1_has_the_original_shapes_and_parameter_names():
    model = zoo.build("md1", seed=0)
    shapes = model.shapes((1, 28, 28))
    assert [shapes[i] for i in (0, 2, 3, 5, 6, 7, 9)] == [
        (32, 19, 19),
        (32, 18, 18),
        (16, 14, 14),
        (16, 13, 13),
        (2704,),
        (1024,),
        (10,),
    ]
    names = [name for name, _, _ in model.parameters()]
    assert names == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "7.weight",
        "7.bias",
        "9.weight",
        "9.bias",
    ]
    params = model.state_dict()
    assert params["0.weight"].shape == (32, 1, 10, 10)
    assert params["3.weight"].shape == (16, 32, 5, 5)
    assert params["7.weight"].shape == (1024, 2704)
    assert params["9.weight"].shape == (10, 1024)
    for name, p in params.items():
        assert p.dtype == np.float32
        if name.endswith("bias"):
            assert np.all(p == np.float32(0.1))
        else:
            assert np.max(np.abs(p)) <= 0.2 and 0.08 < p.std() < 0.095  # truncated at 2 sigma


def test_md1_is_reproducible_from_its_seed():
    a, b, c = zoo.build("md1", seed=3), zoo.build("md1", seed=3), zoo.build("md1", seed=4)
    for name, p in a.state_dict().items():
        np.testing.assert_array_equal(p, b.state_dict()[name])
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_input_that_does_not_fit_names_the_layer_and_shapes():
    model = zoo.build("md1")
    with pytest.raises(ValueError, match=r"\(1, 12, 12\).*layer 3 .*Conv2d\(32, 16"):
        model.forward(np.zeros((1, 1, 12, 12), np.float32))


def _small_model(rng):
    return Sequential(
        Conv2d(1, 3, (3, 2), rng=rng, dtype=np.float64),
        ReLU(),
        MaxPool2d(2, stride=1),
        Conv2d(3, 2, 2, stride=(1, 2), padding=1, rng=rng, dtype=np.float64),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(2 * 3 * 1, 6, rng=rng, dtype=np.float64),
        ReLU(),
        Linear(6, 4, rng=rng, dtype=np.float64),
    )


def test_whole_model_gradient_check_float64():
    rng = np.random.default_rng(0)
    model = _small_model(rng)
    for layer in model.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = rng.uniform(0.1, 0.3, layer.params["bias"].shape)
    x = rng.standard_normal((3, 1, 8, 7))
    y = np.array([0, 3, 1])
    loss = SoftmaxCrossEntropy()

    def f():
        return float(loss.forward(model.forward(x), y))

    f()
    dx = model.backward(loss.backward())
    analytic = {name: g.copy() for name, _, g in model.parameters()}
    for name, p, _ in model.parameters():
        assert rel_error(analytic[name], numerical_grad(f, p)) < 1e-7, name
    assert rel_error(dx, numerical_grad(f, x)) < 1e-7


def test_md1_gradient_check_float64_on_a_small_batch():
    """Model 1 itself, in float64, checked on a sample of entries of every parameter."""
    rng = np.random.default_rng(1)
    model = zoo.build("md1", seed=1, dtype=np.float64)
    x = rng.random((2, 1, 28, 28))
    y = np.array([3, 7])
    loss = SoftmaxCrossEntropy()
    f = lambda: float(loss.forward(model.forward(x), y))  # noqa: E731
    f()
    model.backward(loss.backward())
    for name, p, g in model.parameters():
        idx = rng.choice(p.size, size=min(12, p.size), replace=False)
        analytic = g.reshape(-1)[idx].copy()
        assert rel_error(analytic, numerical_grad_at(f, p, idx)) < 1e-7, name


def test_forward_casts_inputs_to_the_model_dtype():
    m64 = zoo.build("md1", dtype=np.float64)
    out = m64.forward(np.zeros((1, 1, 28, 28), np.float32))
    assert out.dtype == np.float64
    m32 = zoo.build("md1")
    assert m32.forward(np.zeros((1, 1, 28, 28), np.float64)).dtype == np.float32
    assert m32.forward(np.zeros((1, 1, 28, 28), np.uint8)).dtype == np.float32


def test_parameters_stay_the_same_objects_across_steps():
    rng = np.random.default_rng(2)
    model = _small_model(rng)
    before = [(p, g) for _, p, g in model.parameters()]
    opt = Adagrad(model.parameters(), lr=0.1)
    loss = SoftmaxCrossEntropy()
    x, y = rng.standard_normal((4, 1, 8, 7)), np.array([0, 1, 2, 3])
    losses = []
    for _ in range(20):
        losses.append(float(loss.forward(model.forward(x), y)))
        model.backward(loss.backward(), need_input_grad=False)
        opt.step()
    after = [(p, g) for _, p, g in model.parameters()]
    assert all(p is q and g is h for (p, g), (q, h) in zip(before, after))
    assert losses[-1] < 0.5 * losses[0]  # a tiny batch is memorised


def test_summary_and_repr():
    model = zoo.build("md1")
    text = model.summary()
    assert "(32, 19, 19)" in text and "2,769,920" in text and "total parameters: 2,796,218" in text
    assert repr(model).startswith("Sequential(\n  (0): Conv2d(1, 32, kernel_size=(10, 10))")


def test_unknown_model_and_dtype_are_refused():
    with pytest.raises(ValueError, match="unknown model 'md9'"):
        zoo.build("md9")
    with pytest.raises(ValueError, match="float16"):
        zoo.build("md1", dtype=np.float16)


def test_predict_runs_in_batches_without_caching():
    model = zoo.build("md1")
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    probs = model.predict_proba(x, batch_size=2)
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x, batch_size=3), probs.argmax(axis=1))
    with pytest.raises(RuntimeError, match="backward needs"):
        model.backward(np.ones((5, 10), np.float32))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_an_empty_batch_is_refused_by_name(training):
    model = zoo.build("md1")
    with pytest.raises(ShapeError, match=r"the batch is empty \(input shape \(0, 1, 28, 28\)\)"):
        model.forward(np.zeros((0, 1, 28, 28), np.float32), training=training)


def test_backward_checks_the_gradient_against_the_forward_output():
    model = _small_model(np.random.default_rng(2))
    x = np.random.default_rng(3).standard_normal((3, 1, 8, 7))
    out = model.forward(x)
    for wrong in [(4, 4), (3, 5), (3, 4, 1), (12,)]:
        message = rf"the gradient has shape \({wrong[0]},.*but the forward's output had \(3, 4\)"
        with pytest.raises(ShapeError, match=message):
            model.backward(np.ones(wrong))
    dout = np.random.default_rng(4).standard_normal(out.shape)
    dx = model.backward(dout.astype(np.float32))  # cast to the model's float64, as inputs are
    grads = {name: g.copy() for name, _, g in model.parameters()}
    model.forward(x)
    np.testing.assert_array_equal(dx, model.backward(dout.astype(np.float32).astype(np.float64)))
    for name, _, g in model.parameters():
        np.testing.assert_array_equal(grads[name], g, err_msg=name)


def test_forward_takes_lists_of_numbers_and_refuses_other_things():
    model = _small_model(np.random.default_rng(2))
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 7))
    np.testing.assert_array_equal(model.forward(x.tolist()), model.forward(x))
    for bad, given in [(None, "NoneType"), ([[1, 2], [3]], "list"), ("8", "str")]:
        with pytest.raises(TypeError, match=rf"takes a NumPy array .* got {given}"):
            model.forward(bad)
