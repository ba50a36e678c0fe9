"""The weight initialisers (:mod:`stablecnn.nn.init`): spread and seeding."""

import numpy as np
import pytest

from stablecnn.nn import init


def test_truncated_normal_is_cut_at_two_sigma_and_seeded():
    a = init.truncated_normal((200_000,), np.random.default_rng(0), np.float64, std=0.1)
    assert np.max(np.abs(a)) <= 0.2
    # the std of a normal truncated at +-2 sigma is 0.8796 sigma
    assert a.std() == pytest.approx(0.08796, rel=0.01)
    b = init.truncated_normal((200_000,), np.random.default_rng(0), np.float64, std=0.1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "cls,expected_std",
    [
        (init.HeNormal, np.sqrt(2 / 50)),
        (init.HeUniform, np.sqrt(2 / 50)),
        (init.GlorotNormal, np.sqrt(2 / 150)),
        (init.GlorotUniform, np.sqrt(2 / 150)),
    ],
)
def test_fan_based_initialisers_have_the_right_spread(cls, expected_std):
    w = cls()((400, 2, 5, 5), np.random.default_rng(0), np.float64)  # fan_in 50, fan_out 10000
    if "Glorot" in cls.__name__:
        expected_std = np.sqrt(2 / (50 + 10000))
    assert w.std() == pytest.approx(expected_std, rel=0.02)
