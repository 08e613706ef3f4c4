"""The figures of section VI (Figs. 8-16) as matplotlib Figures, drawn from the analysis tables.

Figures are built with the object API (no pyplot state), so that saving them uses
the Agg canvas and notebooks can display the returned objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse as EllipsePatch
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from sagips.analysis.ensemble import R_COLS, SIGMA_COLS, confidence_ellipse
from sagips.analysis.predictions import ENSEMBLE_MODE
from sagips.analysis.tables import MODE_LABELS, SCALE, column_title, final_residuals

BAND_ALPHA = 0.3
MAX_CONTOURS = 10  # Fig. 9 stays readable for ensembles of 100
PANEL = (4.0, 3.0)  # inches per panel


def _panels(nrows: int, ncols: int, sharey: bool = False) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL[0] * ncols, PANEL[1] * nrows), layout="constrained")
    return fig, np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey))


def _time_unit(seconds: float) -> tuple[float, str]:
    """Hours as in the paper for long runs, minutes or seconds for short ones."""
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


def _without(label: str, key: str) -> str:
    return " ".join(part for part in label.split() if not part.startswith(f"{key}="))


def residual_vs_time(residuals: pd.DataFrame, param: int = 0) -> Figure:
    """Figs. 13/14: eq. (6) residual of the ensemble mean vs training time, 1 sigma band per group."""
    labels = list(dict.fromkeys(residuals["group"]))
    ncols = min(len(labels), 3)
    fig, axes = _panels(-(-len(labels) // ncols), ncols, sharey=True)
    div, unit = _time_unit(residuals["time_s"].max())
    for ax, label in zip(axes.flat, labels):
        g = residuals[residuals["group"] == label]
        t, r, s = g["time_s"] / div, g[f"r_{param}"], g[f"sigma_{param}"]
        ax.plot(t, r, color="tab:blue", label="ensemble mean")
        ax.fill_between(t, r - s, r + s, color="tab:blue", alpha=BAND_ALPHA, label=r"1$\sigma$")
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        rest = _without(label, "mode")
        title = MODE_LABELS.get(g["mode"].iloc[0], g["mode"].iloc[0])
        ax.set_title(f"{title}, M={g['members'].iloc[0]}" + (f"\n{rest}" if rest else ""), fontsize="medium")
        ax.set_xlabel(f"accumulated training time [{unit}]")
        ax.set_ylabel(rf"normalised residual $\hat r_{param}$")
        ax.set_xlim(0.0, 1.02 * residuals["time_s"].max() / div)  # one time scale for all panels
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    axes.flat[0].legend()
    return fig


def _single_gpu(data: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The single-GPU reference of a column: ``mode=ensemble`` groups and the mode's own ranks=1 groups."""
    return data[(data["mode"] == ENSEMBLE_MODE) | ((data["mode"] == mode) & (data["ranks"] == 1))]


def distributed(data: pd.DataFrame) -> pd.DataFrame:
    """Rows of groups trained as one distributed GAN: not ``mode=ensemble``, more than one rank."""
    return data[(data["mode"] != ENSEMBLE_MODE) & (data["ranks"] > 1)]


def mean_sigma_vs_time(residuals: pd.DataFrame) -> Figure:
    """Figs. 15/16: spread (top) and |residual| (bottom) averaged over the parameters, x 1e3.

    One column per distributed mode with a curve per group of more than one rank;
    the single-GPU groups are the dashed black reference (see ``_single_gpu``).
    """
    data = residuals.assign(
        mean_r=residuals[R_COLS].abs().mean(axis=1) * SCALE,
        mean_sigma=residuals[SIGMA_COLS].mean(axis=1) * SCALE,
    )
    modes = list(dict.fromkeys(distributed(data)["mode"]))
    fig, axes = _panels(2, len(modes))
    div, unit = _time_unit(data["time_s"].max())
    for col, mode in enumerate(modes):
        top, bottom = axes[0, col], axes[1, col]
        curves = distributed(data)
        for label, g in curves[curves["mode"] == mode].groupby("group", sort=False):
            name = _without(str(label), "mode") or mode
            top.plot(g["time_s"] / div, g["mean_sigma"], label=name)
            bottom.plot(g["time_s"] / div, g["mean_r"], label=name)
        for label, g in _single_gpu(data, mode).groupby("group", sort=False):
            name = column_title(g["mode"].iloc[0], str(label))
            style = {"color": "black", "ls": "--", "label": f"single GPU: {name}"}
            top.plot(g["time_s"] / div, g["mean_sigma"], **style)
            bottom.plot(g["time_s"] / div, g["mean_r"], **style)
        top.set_title(column_title(mode, ""))
        top.set_ylabel(r"mean $\sigma$ of residuals [$10^{-3}$]")
        bottom.set_ylabel(r"mean $|\hat r|$ [$10^{-3}$]")
        bottom.set_xlabel(f"accumulated training time [{unit}]")
        top.legend(fontsize="small")
    return fig


def _log_x(ax: Axes, values: pd.Series, label: str) -> None:
    """Log-scaled x axis ticked at the values present, labelled as plain numbers."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(values.unique()))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def _series(scaling: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Rows of ``scaling`` joined into one line per mode (and any other differing key) across ranks."""
    keyed = scaling.assign(series=[_without(g, "ranks") for g in scaling["group"]])
    for (mode, series), g in keyed.groupby(["mode", "series"], sort=False):
        yield column_title(str(mode), str(series)), g.sort_values("ranks")


def total_time_vs_ranks(scaling: pd.DataFrame) -> Figure:
    """Fig. 11: total training time vs number of ranks, log-log, mean and 1 sigma over members."""
    fig, axes = _panels(1, 1)
    ax = axes[0, 0]
    div, unit = _time_unit(scaling["total_train_time_s"].max())
    for title, g in _series(scaling):
        ax.errorbar(
            g["ranks"],
            g["total_train_time_s"] / div,
            yerr=g["total_train_time_s_std"] / div,
            marker="o",
            capsize=3,
            label=title,
        )
    ax.set(yscale="log", ylabel=f"total training time [{unit}]")
    _log_x(ax, scaling["ranks"], "number of ranks")
    ax.legend(fontsize="small")
    return fig


def analysis_rate_vs_ranks(scaling: pd.DataFrame) -> Figure:
    """Fig. 12: eq. (9) analysis rate vs ranks, log-log; dashed: the mean rate of the single-rank groups."""
    fig, axes = _panels(1, 1)
    ax = axes[0, 0]
    for title, g in _series(scaling):
        ax.errorbar(
            g["ranks"], g["analysis_rate"], yerr=g["analysis_rate_std"], marker="o", capsize=3, label=title
        )
    single = scaling.loc[scaling["ranks"] == 1, "analysis_rate"].mean()
    ax.axhline(single, color="black", ls="--", label="single rank")
    ax.set(yscale="log", ylabel="analysis rate [events/s]")
    _log_x(ax, scaling["ranks"], "number of ranks")
    ax.legend(fontsize="small")
    return fig


def rmse_sigma_contours(subsamples: pd.DataFrame) -> Figure:
    """Fig. 9: per ensemble size M, the 95 % contour of the (RMSE, sigma) cloud of sub-ensembles.

    At most MAX_CONTOURS sizes are drawn, spread evenly from the smallest to the largest.
    """
    labels = list(dict.fromkeys(subsamples["group"]))
    fig, axes = _panels(1, len(labels))
    for ax, label in zip(axes.flat, labels):
        g = subsamples[subsamples["group"] == label]
        sizes = np.unique(g["M"])
        sizes = sizes[np.unique(np.linspace(0, len(sizes) - 1, MAX_CONTOURS).round().astype(int))]
        centers = []
        for color, size in zip(_colormap(len(sizes)), sizes):
            cloud = g[g["M"] == size]
            ell = confidence_ellipse(cloud["rmse"], cloud["sigma"])
            centers.append(ell.center)
            ax.scatter(cloud["rmse"], cloud["sigma"], s=2, color=color, alpha=0.3)
            ax.add_patch(
                EllipsePatch(
                    ell.center,
                    ell.width,
                    ell.height,
                    angle=ell.angle_deg,
                    fill=False,
                    color=color,
                    label=f"M={size}",
                )
            )
        if len(centers) > 1:
            ax.annotate(
                "", xy=centers[-1], xytext=centers[0], arrowprops={"arrowstyle": "->", "color": "red"}
            )
        ax.set_title(f"{label}: 95 % contours")
        ax.set_xlabel("RMSE of residuals")
        ax.set_ylabel(r"mean $\sigma$ of residuals")
        ax.legend(fontsize="x-small", ncols=2)
    return fig


def _colormap(n: int) -> list[tuple[float, ...]]:
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, n)]


def ensemble_size(subsamples: pd.DataFrame) -> Figure:
    """Fig. 10: sigma_0 (top) and r_0 (bottom) of sub-ensembles vs ensemble size M (mean, 1 sigma)."""
    labels = list(dict.fromkeys(subsamples["group"]))
    fig, axes = _panels(2, len(labels))
    for col, label in enumerate(labels):
        stats = subsamples[subsamples["group"] == label].groupby("M")[["r_0", "sigma_0"]]
        mean, std = stats.mean(), stats.std(ddof=0)
        for ax, key, name in (
            (axes[0, col], "sigma_0", r"$\sigma$ of $\hat r_0$"),
            (axes[1, col], "r_0", r"$\hat r_0$"),
        ):
            ax.errorbar(mean.index, mean[key], yerr=std[key], marker="o", capsize=3)
            ax.set_ylabel(name)
        axes[0, col].set_title(label)
        axes[1, col].set_xlabel("ensemble size M")
        for ax in axes[:, col]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def model_points(residuals: pd.DataFrame) -> pd.DataFrame:
    """Fig. 8's points: the last checkpoint of every ``mode=ensemble`` group, by generator size."""
    final = final_residuals(residuals)
    return final[final["mode"] == ENSEMBLE_MODE].sort_values("generator_params")


def model_study(residuals: pd.DataFrame) -> Figure:
    """Fig. 8: final sigma_0 (top) and r_0 (bottom) of ensembles vs generator size, per batch size."""
    fig, axes = _panels(2, 1)
    points = model_points(residuals)
    for batch, g in points.groupby("disc_batch"):
        axes[0, 0].plot(g["generator_params"], g["sigma_0"], marker="o", label=f"discriminator batch {batch}")
        axes[1, 0].plot(g["generator_params"], g["r_0"], marker="o", label=f"discriminator batch {batch}")
    axes[0, 0].set_ylabel(r"$\sigma$ of $\hat r_0$")
    axes[1, 0].set_ylabel(r"$\hat r_0$")
    for ax in axes[:, 0]:
        _log_x(ax, points["generator_params"], "generator parameters")
        ax.legend(fontsize="small")
    return fig
