"""Least-squares fit of a saturating power law L(N) = E + A * N^-alpha (Kaplan et al. 2020,
Hoffmann et al. 2022), without scipy.

For a fixed alpha the model is linear in (E, A), so the fit is one linear least-squares solve per
alpha (variable projection): a log-spaced grid over alpha finds the basin, a golden-section search
refines it. N is divided by its geometric mean inside (A is scaled back), so the two columns of
the linear system stay comparable whatever the size range.
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


def _solve(x: np.ndarray, L: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(E, A_scaled, rss) of the linear fit L ~ E + A_scaled * x^-alpha."""
    X = np.stack([np.ones_like(x), x ** -alpha], axis=1)
    coef, *_ = np.linalg.lstsq(X, L, rcond=None)
    rss = float(((X @ coef - L) ** 2).sum())
    return float(coef[0]), float(coef[1]), rss


def fit_power_law(N, L, *, grid: int = 400, iterations: int = 100) -> PowerLawFit:
    N, L = np.asarray(N, np.float64), np.asarray(L, np.float64)
    if N.shape != L.shape or N.ndim != 1 or len(N) < 3:
        raise ValueError(f"need N and L as two equal-length 1-D sequences of at least 3 points; got {N.shape}, {L.shape}")
    if (N <= 0).any() or not (np.isfinite(N).all() and np.isfinite(L).all()):
        raise ValueError("N must be positive and N, L finite")
    if len(np.unique(N)) < 2:
        raise ValueError("need at least 2 distinct sizes N to fit a power law")
    scale = math.exp(np.log(N).mean())
    x = N / scale
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
    return PowerLawFit(E=E, A=A_scaled * scale ** alpha, alpha=alpha, rss=best, n=len(N),
                       at_bound=i in (0, grid - 1))


# Literature exponents for N (parameters): Kaplan et al. 2020 (non-embedding N, loss in nats per
# token, compute-efficient frontier) and Hoffmann et al. 2022 (all parameters, L(N, D) fit).
KAPLAN_ALPHA_N, HOFFMANN_ALPHA = 0.076, 0.34


def scaling_law_analysis(x: str = "params_non_embedding", y: str = "val_bpb"):
    """`analyze=` for an experiment file: fits L(N) = E + A N^-alpha to every finished run's
    (x, y) and returns (markdown, the fit as a dict)."""

    def analyze(report) -> tuple[str, dict | None]:
        N, L = report.points(x, y)
        try:
            fit = fit_power_law(N, L)
        except ValueError as e:
            return f"## Fit\n\nNo fit: {e}.", None
        lines = ["## Fit", "",
                 f"Least squares over {fit.n} runs (one point per seed), N = {x}, L = {y}:",
                 f"L(N) = {fit.E:.4f} + {fit.A:.4g} * N^-{fit.alpha:.4f}; residual RMS {fit.rms:.4f}.", "",
                 f"Exponent against the literature: Kaplan et al. 2020 alpha_N ~ {KAPLAN_ALPHA_N} (non-embedding "
                 f"parameters, nats per token, models trained to convergence on WebText2); Hoffmann et al. 2022 "
                 f"alpha = {HOFFMANN_ALPHA} (all parameters, in a joint fit with data size). At a fixed token "
                 "budget the larger models here are undertrained, which flattens the curve at the large end."]
        if fit.at_bound:
            lines += ["", "**The fit has no interior optimum** (alpha at the end of its search range): over these "
                      "sizes the loss is not a saturating power law (it falls log-linearly, or does not fall), so "
                      "E, A and alpha are not identified."]
        return "\n".join(lines), {"E": fit.E, "A": fit.A, "alpha": fit.alpha, "rss": fit.rss, "rms": fit.rms,
                                   "points": fit.n, "at_bound": fit.at_bound, "x": x, "y": y}

    return analyze
