"""Plots an experiment file names as `plot=`: each is `fn(report, path)` writing one PNG.

matplotlib is an optional dependency (`pip install 'lmlab[plot]'`): it is imported when a plot is
drawn, and lmlab.experiment.report draws one only when it is installed (the table and JSON do
not need it).
"""

from __future__ import annotations

import re

import numpy as np

from lmlab.experiment.fit import at_largest_budget, fit_joint_power_law, fit_power_law

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


def per_variant(metrics: tuple[str, ...], labels: dict | None = None):
    """One panel per metric, one point per variant with its seed std as an error bar. Points, not
    bars: the axis spans the values, not 0 to them, so a difference of 1% stays visible."""
    labels = labels or {}

    def plot(report, path) -> None:
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 4), dpi=100, squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for i, variant in enumerate(report.rows):
                mean, std = _stat(report, variant, metric)
                ax.errorbar([i], [mean], yerr=[std], fmt="o", capsize=4, color=f"C{i}")
            ax.set_xticks(range(len(report.rows)), report.rows)
            ax.margins(x=0.15, y=0.2)
            ax.set_title(labels.get(metric, metric))
            ax.tick_params(axis="x", rotation=30)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(_title(report, "per variant"))
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    return plot


def _fit_or_none(fit, *args):
    try:
        return fit(*args)
    except ValueError:  # too few points or sizes: the plot shows the points alone
        return None


def scaling_law(x: str = "params_non_embedding", y: str = "val_bpb", d: str | None = None):
    """Points (one colour per budget d, if given), the fitted L(N) = E + A N^-alpha at the largest
    budget, the fitted L(N, D) at each budget (dashed), and the residuals of the fuller fit
    (L(N, D) where it fits, else L(N))."""

    def plot(report, path) -> None:
        plt = _pyplot()
        columns = [np.asarray(v, np.float64) for v in report.points(x, y, *([d] if d else []))]
        N, L, D = columns if d else (*columns, None)
        single = _fit_or_none(fit_power_law, *at_largest_budget(N, D, L))
        joint = _fit_or_none(fit_joint_power_law, N, D, L) if D is not None else None
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), dpi=100, sharex=True, layout="constrained",
                                          gridspec_kw={"height_ratios": [3, 1.3]})
        grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 200) if len(N) else np.array([])
        budgets = sorted(set(D.tolist()), reverse=True) if D is not None else [None]
        for k, budget in enumerate(budgets):
            at = np.ones(len(N), bool) if budget is None else D == budget
            label = "runs (one point per seed)" + ("" if budget is None else f", {d} = {budget:,.0f}")
            top.scatter(N[at], L[at], color=f"C{k}", zorder=3, label=label)
            if joint is not None:
                top.plot(grid, joint.predict(grid, budget), color=f"C{k}", ls="--", lw=1)
                bottom.scatter(N[at], L[at] - joint.predict(N[at], budget), color=f"C{k}")
            elif single is not None and k == 0:
                bottom.scatter(N[at], L[at] - single.predict(N[at]), color=f"C{k}")
        if single is not None:
            top.plot(grid, single.predict(grid), color="k", lw=1.2,
                     label=f"L(N) = {single.E:.3f} + {single.A:.3g} N^-{single.alpha:.3f}")
            top.axhline(single.E, color="k", ls=":", lw=1, label=f"E = {single.E:.3f}")
        if joint is not None:
            top.plot([], [], color="gray", ls="--", lw=1, label=f"L(N, D): alpha {joint.alpha:.3f}, beta {joint.beta:.3f}")
        bottom.axhline(0, color="gray", lw=1)
        top.set_xscale("log")
        top.set_ylabel(f"{y} (held-out)")
        top.set_title(_title(report, f"{y} against {x}"))
        top.legend(fontsize=8)
        top.grid(alpha=0.3)
        bottom.set_xlabel(f"{x} (N)")
        bottom.set_ylabel("residual")
        bottom.grid(alpha=0.3)
        fig.savefig(path)
        plt.close(fig)

    return plot
