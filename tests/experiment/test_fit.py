import numpy as np
import pytest

from lmlab.experiment.fit import fit_power_law


@pytest.mark.parametrize("E, A, alpha", [
    (1.69, 406.4, 0.34),   # Hoffmann et al. 2022's N term
    (0.5, 12.0, 0.076),    # Kaplan et al. 2020's exponent
    (2.0, 3e3, 0.9),
])
def test_recovers_known_parameters_from_exact_points(E, A, alpha):
    N = np.geomspace(1e5, 1e7, 6)
    fit = fit_power_law(N, E + A * N ** -alpha)
    assert fit.alpha == pytest.approx(alpha, rel=1e-5)
    assert fit.E == pytest.approx(E, rel=1e-5)
    assert fit.A == pytest.approx(A, rel=1e-4)
    assert fit.rss < 1e-16 and not fit.at_bound
    np.testing.assert_allclose(fit.predict([3e6]), E + A * 3e6 ** -alpha, rtol=1e-9)


def test_noisy_points_fit_near_the_truth_and_no_worse_than_it():
    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e5, 1e7, 7), 3)  # 3 seeds per size
    truth = 1.69 + 406.4 * N ** -0.34
    L = truth + rng.normal(0, 0.005, N.shape)
    fit = fit_power_law(N, L)
    assert fit.alpha == pytest.approx(0.34, abs=0.05)
    assert fit.rss <= ((truth - L) ** 2).sum()  # least squares: at most the true curve's error
    # And it is a minimum: nudging any parameter raises the error.
    for dE, dA, da in ((1e-3, 0, 0), (0, 1.0, 0), (0, 0, 1e-3)):
        nudged = (fit.E + dE) + (fit.A + dA) * N ** -(fit.alpha + da)
        assert ((nudged - L) ** 2).sum() > fit.rss


def test_loss_that_does_not_fall_with_size_is_flagged():
    N = np.geomspace(1e5, 1e7, 6)
    fit = fit_power_law(N, 2.0 + 1e-3 * np.log(N))  # rises with N: no interior power law
    assert fit.at_bound


@pytest.mark.parametrize("N, L", [([1e5, 1e6], [2.0, 1.9]), ([1e5, 1e5, 1e5], [2, 2.1, 2.2]),
                                  ([1e5, -1, 1e7], [2, 2, 2]), ([1e5, 1e6, 1e7], [2, np.nan, 1])])
def test_bad_input_is_a_value_error(N, L):
    with pytest.raises(ValueError):
        fit_power_law(N, L)
