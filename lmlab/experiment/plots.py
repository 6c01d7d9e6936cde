"""Plots an experiment file names as `plot=`: each is `fn(report, path)` writing one PNG.

matplotlib is an optional dependency (`pip install 'lmlab[plot]'`): it is imported when a plot is
drawn, and lmlab.experiment.report draws one only when it is installed (the table and JSON do
not need it).
"""

from __future__ import annotations

import re

import numpy as np

from lmlab.experiment.fit import fit_power_law

_LENGTH = re.compile(r"^bpb@(\d+)$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stat(report, variant: str, metric: str) -> tuple[float, float]:
    s = report.summary[variant].get(metric) or {"n": 0}
    if not s["n"]:
        return np.nan, 0.0
    return s["mean"], s["std"] or 0.0


def _title(report, text: str) -> str:
    return f"{report.name} ({report.scale} scale): {text}"


def bpb_vs_length(report, path) -> None:
    """Held-out bits per byte against evaluation length, one line per variant (error bars: seed std)."""
    plt = _pyplot()
    metrics = sorted({int(m.group(1)) for v in report.summary.values() for k in v if (m := _LENGTH.match(k))})
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for variant in report.variants:
        stats = [_stat(report, variant, f"bpb@{n}") for n in metrics]
        means, stds = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
        ax.errorbar(metrics, means, yerr=stds, marker="o", capsize=3, label=variant)
    ax.set_xscale("log", base=2)
    ax.set_xticks(metrics, [str(n) for n in metrics])
    ax.set_xlabel("evaluation length (tokens; trained at the first)")
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.set_title(_title(report, "length extrapolation"))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bars(metrics: tuple[str, ...], labels: dict | None = None):
    """One panel per metric, one bar per variant (error bars: seed std)."""
    labels = labels or {}

    def plot(report, path) -> None:
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 4), dpi=100, squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            stats = [_stat(report, v, metric) for v in report.rows]
            ax.bar(report.rows, [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3,
                   color=[f"C{i}" for i in range(len(report.rows))])
            ax.set_title(labels.get(metric, metric))
            ax.tick_params(axis="x", rotation=30)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(_title(report, "per variant"))
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    return plot


def scaling_law(x: str = "params_non_embedding", y: str = "val_bpb"):
    """Points, the fitted L(N) = E + A N^-alpha and its residuals."""

    def plot(report, path) -> None:
        plt = _pyplot()
        N, L = (np.asarray(v, np.float64) for v in report.points(x, y))
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), dpi=100, sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1.3]})
        top.scatter(N, L, color="C0", zorder=3, label="runs (one point per seed)")
        try:
            fit = fit_power_law(N, L)
        except ValueError:
            fit = None
        if fit is not None:
            grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 200)
            top.plot(grid, fit.predict(grid), color="C1",
                     label=f"fit: {fit.E:.3f} + {fit.A:.3g} N^-{fit.alpha:.3f}")
            top.axhline(fit.E, color="C1", ls=":", lw=1, label=f"E = {fit.E:.3f}")
            bottom.scatter(N, L - fit.predict(N), color="C0")
        bottom.axhline(0, color="gray", lw=1)
        top.set_xscale("log")
        top.set_ylabel(f"{y} (held-out)")
        top.set_title(_title(report, f"{y} against {x}"))
        top.legend()
        top.grid(alpha=0.3)
        bottom.set_xlabel(f"{x} (N)")
        bottom.set_ylabel("residual")
        bottom.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    return plot
