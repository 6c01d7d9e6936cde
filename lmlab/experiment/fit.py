"""Least-squares fits of saturating power laws, L(N) = E + A * N^-alpha (Kaplan et al. 2020) and
L(N, D) = E + A * N^-alpha + B * D^-beta (Hoffmann et al. 2022), without scipy.

For fixed exponents the model is linear in the coefficients, so a fit is one linear least-squares
solve per exponent (variable projection): a log-spaced grid finds the basin, then a golden-section
search (one exponent) or shrinking local grids (two) refine it. N and D are divided by their
geometric means inside (A and B are scaled back), so the columns of the linear system stay
comparable whatever the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA_RANGE = (1e-3, 4.0)


@dataclass(frozen=True)
class PowerLawFit:
    E: float
    A: float
    alpha: float
    rss: float            # residual sum of squares
    n: int                # points
    at_bound: bool        # alpha at the end of ALPHA_RANGE: no interior optimum (e.g. L does not fall with N)

    def predict(self, N) -> np.ndarray:
        return self.E + self.A * np.asarray(N, np.float64) ** -self.alpha

    @property
    def rms(self) -> float:
        return math.sqrt(self.rss / self.n)


@dataclass(frozen=True)
class JointFit:
    """L(N, D) = E + A * N^-alpha + B * D^-beta."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    rss: float
    n: int
    at_bound: bool        # an exponent at the end of ALPHA_RANGE: that term is not identified

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        return self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta

    @property
    def rms(self) -> float:
        return math.sqrt(self.rss / self.n)


def _linear(columns: list[np.ndarray], L: np.ndarray) -> tuple[np.ndarray, float]:
    """(coefficients, rss) of the least-squares fit L ~ 1 * c0 + columns[0] * c1 + ..."""
    X = np.stack([np.ones_like(L), *columns], axis=1)
    coef, *_ = np.linalg.lstsq(X, L, rcond=None)
    return coef, float(((X @ coef - L) ** 2).sum())


def _solve(x: np.ndarray, L: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(E, A_scaled, rss) of the linear fit L ~ E + A_scaled * x^-alpha."""
    coef, rss = _linear([x ** -alpha], L)
    return float(coef[0]), float(coef[1]), rss


def _checked(name: str, values, L: np.ndarray, distinct: int) -> tuple[np.ndarray, float]:
    """values as float64 divided by their geometric mean, and that mean; ValueError on bad input."""
    v = np.asarray(values, np.float64)
    if v.shape != L.shape or v.ndim != 1 or len(v) < 3:
        raise ValueError(f"need {name} and L as equal-length 1-D sequences of at least 3 points; got {v.shape}, {L.shape}")
    if (v <= 0).any() or not (np.isfinite(v).all() and np.isfinite(L).all()):
        raise ValueError(f"{name} must be positive and {name}, L finite")
    if len(np.unique(v)) < distinct:
        raise ValueError(f"need at least {distinct} distinct values of {name} to fit its power law")
    scale = math.exp(np.log(v).mean())
    return v / scale, scale


def fit_power_law(N, L, *, grid: int = 400, iterations: int = 100) -> PowerLawFit:
    L = np.asarray(L, np.float64)
    x, scale = _checked("N", N, L, distinct=2)
    alphas = np.geomspace(*ALPHA_RANGE, grid)
    rss = [_solve(x, L, a)[2] for a in alphas]
    i = int(np.argmin(rss))
    lo, hi = alphas[max(i - 1, 0)], alphas[min(i + 1, grid - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(iterations):  # golden section on the bracket around the best grid point
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _solve(x, L, a)[2] < _solve(x, L, b)[2]:
            hi = b
        else:
            lo = a
    alpha = (lo + hi) / 2
    E, A_scaled, best = _solve(x, L, alpha)
    return PowerLawFit(E=E, A=float(A_scaled * scale ** alpha), alpha=float(alpha), rss=best, n=len(L),
                       at_bound=i in (0, grid - 1))


def fit_joint_power_law(N, D, L, *, grid: int = 60, rounds: int = 5) -> JointFit:
    """Least squares of L(N, D) = E + A N^-alpha + B D^-beta; needs 3 distinct N and 3 distinct D
    (with two, E and the D term trade off exactly)."""
    L = np.asarray(L, np.float64)
    (x, x_scale), (y, y_scale) = _checked("N", N, L, distinct=3), _checked("D", D, L, distinct=3)

    def rss(alpha: float, beta: float) -> float:
        return _linear([x ** -alpha, y ** -beta], L)[1]

    lo, hi = (math.log(a) for a in ALPHA_RANGE)
    log_a, log_b = np.linspace(lo, hi, grid), np.linspace(lo, hi, grid)
    for _ in range(rounds):  # each round: the whole current grid, then a 10x finer one around its best
        errors = np.array([[rss(math.exp(a), math.exp(b)) for b in log_b] for a in log_a])
        i, j = np.unravel_index(int(np.argmin(errors)), errors.shape)
        best_a, best_b = log_a[i], log_b[j]
        span = 2 * (log_a[1] - log_a[0])
        log_a = np.linspace(max(lo, best_a - span), min(hi, best_a + span), 41)
        log_b = np.linspace(max(lo, best_b - span), min(hi, best_b + span), 41)
    alpha, beta = math.exp(best_a), math.exp(best_b)
    coef, best = _linear([x ** -alpha, y ** -beta], L)
    at_bound = any(min(abs(v - lo), abs(v - hi)) < 1e-9 for v in (best_a, best_b))
    return JointFit(E=float(coef[0]), A=float(coef[1]) * x_scale ** alpha, alpha=alpha,
                    B=float(coef[2]) * y_scale ** beta, beta=beta, rss=best, n=len(L), at_bound=at_bound)


# Literature exponents: Kaplan et al. 2020 (non-embedding N, loss in nats per token, compute-
# efficient frontier) and Hoffmann et al. 2022 (all parameters, L(N, D) fit).
KAPLAN_ALPHA_N, HOFFMANN_ALPHA, HOFFMANN_BETA = 0.076, 0.34, 0.28


def at_largest_budget(N, D, L) -> tuple[list, list]:
    """The (N, L) points of the runs with the most training tokens (all of them when D is None)."""
    if D is None:
        return list(N), list(L)
    top = max(D)
    return [n for n, d in zip(N, D) if d == top], [v for v, d in zip(L, D) if d == top]


def best_size(N, L) -> tuple[float, float, bool]:
    """(the N with the lowest mean L over its seeds, that mean, whether a larger N has a higher mean)."""
    means = {n: float(np.mean([v for m, v in zip(N, L) if m == n])) for n in set(N)}
    best = min(means, key=means.get)
    return best, means[best], best < max(means)


def _power_law_text(fit: PowerLawFit, N, L, x: str, y: str, where: str) -> list[str]:
    n_best, l_best, larger_worse = best_size(N, L)
    shape = (f"The loss is lowest at N = {n_best:,.0f} ({l_best:.4f}); the larger sizes are worse at this budget, "
             "which a power law falling in N cannot follow (their points sit above the curve)." if larger_worse else
             "The loss falls from each size to the next larger one.")
    lines = [f"Least squares over {fit.n} runs (one point per seed{where}), N = {x}, L = {y}:",
             f"L(N) = {fit.E:.4f} + {fit.A:.4g} * N^-{fit.alpha:.4f}; residual RMS {fit.rms:.4f}. {shape}", "",
             f"Exponent against the literature: Kaplan et al. 2020 alpha_N ~ {KAPLAN_ALPHA_N} (non-embedding "
             f"parameters, nats per token, models trained to convergence on WebText2); Hoffmann et al. 2022 "
             f"alpha = {HOFFMANN_ALPHA} (all parameters, in a joint fit with data size)."]
    if fit.at_bound:
        lines += ["", "**The fit has no interior optimum** (alpha at the end of its search range): over these "
                  "sizes the loss is not a saturating power law (it falls log-linearly, or does not fall), so "
                  "E, A and alpha are not identified."]
    return lines


def _joint_text(fit: JointFit, x: str, d: str) -> list[str]:
    lines = ["", "## Fit over sizes and budgets", "",
             f"Least squares over {fit.n} runs, N = {x}, D = {d}:",
             f"L(N, D) = {fit.E:.4f} + {fit.A:.4g} * N^-{fit.alpha:.4f} + {fit.B:.4g} * D^-{fit.beta:.4f}; "
             f"residual RMS {fit.rms:.4f}.", "",
             f"Hoffmann et al. 2022 (their approach 3, Huber loss on log L, nats per token, up to 16B parameters "
             f"and 500B tokens): alpha = {HOFFMANN_ALPHA}, beta = {HOFFMANN_BETA}."]
    if fit.at_bound:
        lines += ["", "**An exponent is at the end of its search range**: that term is not identified by these runs."]
    return lines


def scaling_law_analysis(x: str = "params_non_embedding", y: str = "val_bpb", d: str | None = None):
    """`analyze=` for an experiment file: fits L(N) = E + A N^-alpha to the finished runs' (x, y)
    (those at the largest budget d, if given), and with d L(N, D) over every run where the grid
    allows; returns (markdown, the fits as a dict)."""

    def analyze(report) -> tuple[str, dict | None]:
        N, L, D = report.points(x, y, d) if d else (*report.points(x, y), None)
        Nt, Lt = at_largest_budget(N, D, L)
        try:
            fit = fit_power_law(Nt, Lt)
        except ValueError as e:
            return f"## Fit\n\nNo fit: {e}.", None
        where = f", at the largest budget {d} = {max(D):,.0f}" if D is not None and len(set(D)) > 1 else ""
        lines = ["## Fit", "", *_power_law_text(fit, Nt, Lt, x, y, where)]
        result = {"E": fit.E, "A": fit.A, "alpha": fit.alpha, "rss": fit.rss, "rms": fit.rms,
                  "points": fit.n, "at_bound": fit.at_bound, "x": x, "y": y}
        if D is not None:
            try:
                joint = fit_joint_power_law(N, D, L)
            except ValueError as e:
                lines += ["", f"No fit over budgets: {e}."]
            else:
                lines += _joint_text(joint, x, d)
                result["joint"] = {k: getattr(joint, k) for k in ("E", "A", "alpha", "B", "beta", "rss", "rms", "n",
                                                                  "at_bound")} | {"d": d}
        return "\n".join(lines), result

    return analyze
