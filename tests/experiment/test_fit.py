import numpy as np
import pytest

from lmlab.experiment.fit import at_largest_budget, best_size, fit_joint_power_law, fit_power_law


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


# Hoffmann et al. 2022's fitted L(N, D), on the grid of the scaling-law experiment's shape.
HOFFMANN = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
N_GRID, D_GRID = np.meshgrid(np.geomspace(1e5, 1e7, 6), [7.4e5, 1.5e6, 3.0e6])


def hoffmann(N, D):
    h = HOFFMANN
    return h["E"] + h["A"] * N ** -h["alpha"] + h["B"] * D ** -h["beta"]


def test_joint_fit_recovers_known_parameters_from_exact_points():
    N, D = N_GRID.ravel(), D_GRID.ravel()
    fit = fit_joint_power_law(N, D, hoffmann(N, D))
    for name, value in HOFFMANN.items():
        assert getattr(fit, name) == pytest.approx(value, rel=2e-3), name
    assert fit.rms < 1e-5 and not fit.at_bound and fit.n == 18
    np.testing.assert_allclose(fit.predict(3e6, 1e6), hoffmann(3e6, 1e6), rtol=1e-5)


def test_joint_fit_on_noisy_points_matches_scipy_least_squares():
    """An independent optimiser (scipy's trust-region least squares, started from the truth) finds
    no lower error than the grid-and-projection fit, and the same exponents."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(1)
    N, D = np.repeat(N_GRID.ravel(), 2), np.repeat(D_GRID.ravel(), 2)  # 2 seeds per point
    L = hoffmann(N, D) + rng.normal(0, 0.003, N.shape)
    fit = fit_joint_power_law(N, D, L)

    def residuals(p):
        E, logA, alpha, logB, beta = p
        return E + np.exp(logA) * N ** -alpha + np.exp(logB) * D ** -beta - L

    h = HOFFMANN
    ref = least_squares(residuals, [h["E"], np.log(h["A"]), h["alpha"], np.log(h["B"]), h["beta"]],
                        xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=20000)
    assert fit.rss <= 2 * ref.cost * (1 + 1e-5)  # scipy's cost is half the sum of squares
    assert fit.alpha == pytest.approx(ref.x[2], rel=1e-3) and fit.beta == pytest.approx(ref.x[4], rel=1e-3)
    assert fit.E == pytest.approx(ref.x[0], abs=1e-3)


@pytest.mark.parametrize("D", [np.tile([1e6, 2e6], 9), np.full(18, 1e6)])
def test_joint_fit_needs_three_budgets(D):
    N = np.repeat(np.geomspace(1e5, 1e7, 6), 3)
    with pytest.raises(ValueError, match="3 distinct values of D"):
        fit_joint_power_law(N, D, hoffmann(N, D))


def test_single_fit_takes_the_largest_budget_only():
    N, D, L = [1, 2, 3, 1, 2], [5, 5, 5, 9, 9], [0.1, 0.2, 0.3, 0.4, 0.5]
    assert at_largest_budget(N, D, L) == ([1, 2], [0.4, 0.5])
    assert at_largest_budget(N, None, L) == (N, L)


def test_best_size_is_the_lowest_mean_over_seeds_and_says_whether_larger_ones_are_worse():
    N = [1, 1, 2, 2, 3, 3]
    assert best_size(N, [3.0, 3.2, 2.0, 2.4, 2.5, 2.5]) == (2, pytest.approx(2.2), True)
    assert best_size(N, [3.0, 3.2, 2.0, 2.4, 2.1, 2.1]) == (3, pytest.approx(2.1), False)
