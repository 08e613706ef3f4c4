"""The figures of section VI (Figs. 8-16) as matplotlib Figures, drawn from the analysis tables alone.

Figures are built with the object API (no pyplot state), so that saving them uses
the Agg canvas and notebooks can display the returned objects. Every figure is
titled with its paper figure and study, names groups as names.group_name does,
and shows residuals as eq. (6)'s raw values. A spread (eq. 8) of a group with a
single member is n/a: no band, no sigma line.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse as EllipsePatch
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from sagips.analysis.ensemble import MIN_SIGMA_MEMBERS, R_COLS, SIGMA_COLS, confidence_ellipse
from sagips.analysis.names import mode_name, variant
from sagips.analysis.predictions import ENSEMBLE_MODE
from sagips.analysis.tables import final_residuals
from sagips.scaling_model.overlay import model_curve

BAND_ALPHA = 0.3
MAX_CONTOURS = 10  # Fig. 9 stays readable for ensembles of 100
PANEL = (4.0, 3.0)  # inches per panel
NO_SIGMA = f"σ n/a: eq. (8) needs {MIN_SIGMA_MEMBERS} members"


def _panels(nrows: int, ncols: int, sharey: bool = False) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL[0] * max(ncols, 2), PANEL[1] * nrows + 0.6), layout="constrained")
    return fig, np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey))


def _title(fig: Figure, what: str, data: pd.DataFrame) -> None:
    """The paper's figure and what it shows, then the studies its data come from."""
    studies = ", ".join(dict.fromkeys(data["study"].astype(str))) if "study" in data else "?"
    fig.suptitle(f"{what}\nstudy: {studies}", fontsize="medium")


def _time_unit(seconds: float) -> tuple[float, str]:
    """Hours as in the paper for long runs, minutes or seconds for short ones."""
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


def _without(label: str, key: str) -> str:
    return " ".join(part for part in label.split() if not part.startswith(f"{key}="))


def _note(ax: Axes, text: str) -> None:
    """A grey remark in the panel's upper right corner."""
    ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize="x-small", color="grey")


def residual_vs_time(residuals: pd.DataFrame, param: int = 0) -> Figure:
    """Figs. 13/14: eq. (6) residual r_param of the ensemble mean vs training time, 1 sigma band per group."""
    labels = list(dict.fromkeys(residuals["group"]))
    ncols = min(len(labels), 3)
    fig, axes = _panels(-(-len(labels) // ncols), ncols, sharey=True)
    div, unit = _time_unit(residuals["time_s"].max())
    banded = False
    for ax, label in zip(axes.flat, labels):
        g = residuals[residuals["group"] == label]
        t, r, s = g["time_s"] / div, g[f"r_{param}"], g[f"sigma_{param}"]
        members = int(g["members"].iloc[0])
        ax.plot(t, r, color="tab:blue")
        if members >= MIN_SIGMA_MEMBERS:
            ax.fill_between(t, r - s, r + s, color="tab:blue", alpha=BAND_ALPHA, lw=0)
            banded = True
        else:
            _note(ax, NO_SIGMA)
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{label}, M={members}", fontsize="small")
        ax.set_xlabel(f"accumulated training time [{unit}]")
        ax.set_ylabel(rf"normalised residual $\hat r_{param}$")
        ax.set_xlim(0.0, 1.02 * residuals["time_s"].max() / div)  # one time scale for all panels
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="tab:blue", label="ensemble mean (eq. 7)")]
    if banded:
        handles.append(Patch(color="tab:blue", alpha=BAND_ALPHA, label=r"$\pm 1\sigma$ (eq. 8)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    _title(fig, rf"Figs. 13/14: residual $\hat r_{param}$ (eq. 6) vs training time", residuals)
    return fig


def _single_gpu(data: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The single-GPU reference of a column: ``mode=ensemble`` groups and the mode's own ranks=1 groups."""
    return data[(data["mode"] == ENSEMBLE_MODE) | ((data["mode"] == mode) & (data["ranks"] == 1))]


def distributed(data: pd.DataFrame) -> pd.DataFrame:
    """Rows of groups trained as one distributed GAN: not ``mode=ensemble``, more than one rank."""
    return data[(data["mode"] != ENSEMBLE_MODE) & (data["ranks"] > 1)]


def mean_sigma_vs_time(residuals: pd.DataFrame) -> Figure:
    """Figs. 15/16: spread (top) and |residual| (bottom) averaged over the parameters, raw values.

    One column per distributed mode with a curve per group of more than one rank;
    the single-GPU groups are the black reference lines (see ``_single_gpu``).
    Groups of one member have no spread and no line in the top row.
    """
    data = residuals.assign(
        mean_r=residuals[R_COLS].abs().mean(axis=1), mean_sigma=residuals[SIGMA_COLS].mean(axis=1)
    )
    modes = list(dict.fromkeys(distributed(data)["mode"]))
    fig, axes = _panels(2, len(modes))
    div, unit = _time_unit(data["time_s"].max())
    for col, mode in enumerate(modes):
        top, bottom = axes[0, col], axes[1, col]
        own = distributed(data)
        curves = [(str(label), g, {}) for label, g in own[own["mode"] == mode].groupby("group", sort=False)]
        styles = cycle(["--", ":", "-."])
        curves += [
            (f"single GPU: {label}", g, {"color": "black", "ls": next(styles)})
            for label, g in _single_gpu(data, mode).groupby("group", sort=False)
        ]
        lonely = []
        for label, g, style in curves:
            name = variant(label, mode) or label
            bottom.plot(g["time_s"] / div, g["mean_r"], label=name, **style)
            if g["members"].iloc[0] >= MIN_SIGMA_MEMBERS:
                top.plot(g["time_s"] / div, g["mean_sigma"], label=name, **style)
            else:
                lonely.append(name)
        if lonely:
            _note(top, f"{NO_SIGMA}; no line for\n{', '.join(lonely)} (1 member)")
        top.set_title(mode_name(mode), fontsize="medium")
        top.set_ylabel(r"mean $\sigma$ of $\hat r_i$ (eq. 8)")
        bottom.set_ylabel(r"mean $|\hat r_i|$ (eq. 6)")
        bottom.set_xlabel(f"accumulated training time [{unit}]")
        bottom.legend(fontsize="x-small")
    _title(fig, "Figs. 15/16: spread and |residual| averaged over the 6 parameters vs training time", data)
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
    for series, g in keyed.groupby("series", sort=False):
        yield str(series), g.sort_values("ranks")


SEEDS_BARS = "error bars: ±1 std over the seeds (none for one seed)"


def _model_line(
    ax: Axes, series: pd.DataFrame, model: str | None, column: str, color: str, div: float = 1
) -> None:
    """The scaling model's prediction for a measured series, dotted in its colour (docs/scaling-model.md)."""
    if model:
        curve = model_curve(series, model)
        ax.plot(curve["ranks"], curve[column] / div, ls=":", lw=1.5, color=color)


def _model_legend(ax: Axes, model: str | None) -> None:
    if model:
        ax.plot([], [], color="black", ls=":", lw=1.5, label=f"dotted: scaling model, profile {model}")


def total_time_vs_ranks(scaling: pd.DataFrame, model: str | None = None) -> Figure:
    """Fig. 11: total training time vs number of ranks, log-log, mean and 1 sigma over the seeds.

    ``model``: a scaling-model profile whose prediction is drawn beside each series (--model).
    """
    fig, axes = _panels(1, 1)
    ax = axes[0, 0]
    div, unit = _time_unit(scaling["total_train_time_s"].max())
    for title, g in _series(scaling):
        line = ax.errorbar(g["ranks"], g["total_train_time_s"] / div, yerr=g["total_train_time_s_std"] / div,
                           marker="o", capsize=3, label=title)  # fmt: skip
        _model_line(ax, g, model, "total_train_time_s", line.lines[0].get_color(), div)
    _model_legend(ax, model)
    ax.set(yscale="log", ylabel=f"total training time [{unit}]")
    _log_x(ax, scaling["ranks"], "number of ranks")
    ax.legend(fontsize="small", title=SEEDS_BARS, title_fontsize="x-small")
    _title(fig, "Fig. 11: total training time vs ranks", scaling)
    return fig


def analysis_rate_vs_ranks(scaling: pd.DataFrame, model: str | None = None) -> Figure:
    """Fig. 12: eq. (9) analysis rate vs ranks, log-log; dashed: each series' own single-rank rate.

    ``model``: a scaling-model profile whose prediction is drawn beside each series (--model).
    """
    fig, axes = _panels(1, 1)
    ax = axes[0, 0]
    for title, g in _series(scaling):
        line = ax.errorbar(g["ranks"], g["analysis_rate"], yerr=g["analysis_rate_std"], marker="o", capsize=3,
                           label=title)  # fmt: skip
        single = g.loc[g["ranks"] == 1, "analysis_rate"]
        if not single.empty:
            ax.axhline(single.iloc[0], color=line.lines[0].get_color(), ls="--", lw=1)
        _model_line(ax, g, model, "analysis_rate", line.lines[0].get_color())
    ax.plot([], [], color="black", ls="--", lw=1, label="dashed: the series' rate at 1 rank")
    _model_legend(ax, model)
    ax.set(yscale="log", ylabel="analysis rate (eq. 9) [events/s]")
    _log_x(ax, scaling["ranks"], "number of ranks")
    ax.legend(fontsize="small", title=SEEDS_BARS, title_fontsize="x-small")
    _title(fig, "Fig. 12: analysis rate vs ranks", scaling)
    return fig


def rmse_sigma_contours(subsamples: pd.DataFrame) -> Figure:
    """Fig. 9: per ensemble size M, the 95 % contour of the (RMSE, sigma) cloud of sub-ensembles.

    At most MAX_CONTOURS sizes are drawn, spread evenly from the smallest to the largest.
    A size whose sub-ensembles all give the same point (M = all members) is drawn
    as a cross. The red arrow runs from the smallest M's centre to the largest's.
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
            ell = confidence_ellipse(cloud["rmse"], cloud["mean_sigma"])
            centers.append(ell.center)
            if cloud[["rmse", "mean_sigma"]].nunique().max() == 1:  # e.g. M = all members: one subset
                ax.plot(*ell.center, marker="x", color=color, ls="none", label=f"M={size} (a single point)")
                continue
            ax.scatter(cloud["rmse"], cloud["mean_sigma"], s=2, color=color, alpha=0.3)
            ax.add_patch(EllipsePatch(ell.center, ell.width, ell.height, angle=ell.angle_deg, fill=False,
                                      color=color, label=f"M={size}"))  # fmt: skip
        if len(centers) > 1:
            arrow = {"arrowstyle": "->", "color": "red"}
            ax.annotate("", xy=centers[-1], xytext=centers[0], arrowprops=arrow)
            ax.plot([], [], color="red", marker=r"$\rightarrow$", ms=12, ls="none", label="increasing M")
        ax.autoscale_view()
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(r"RMSE of $\hat r_0..\hat r_5$ (eq. 6)")
        ax.set_ylabel(r"mean $\sigma$ of $\hat r_i$ (eq. 8)")
        ax.legend(fontsize="x-small", ncols=2)
    _title(fig, f"Fig. 9: 95 % contours of RMSE vs spread of {g['draw'].nunique()} random sub-ensembles "
                "per size M", subsamples)  # fmt: skip
    return fig


def _colormap(n: int) -> list[tuple[float, ...]]:
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, n)]


def ensemble_size(subsamples: pd.DataFrame, param: int = 0) -> Figure:
    """Fig. 10: sigma_param (top) and r_param (bottom) of sub-ensembles vs ensemble size M.

    Points are the mean over the random sub-ensembles of each size, error bars
    their standard deviation.
    """
    labels = list(dict.fromkeys(subsamples["group"]))
    fig, axes = _panels(2, len(labels))
    r, s = f"r_{param}", f"sigma_{param}"
    for col, label in enumerate(labels):
        g = subsamples[subsamples["group"] == label]
        stats = g.groupby("M")[[r, s]]
        mean, std = stats.mean(), stats.std(ddof=0)
        bars = f"mean ± 1 std over {g['draw'].nunique()} random sub-ensembles of size M"
        for ax, key, name in (
            (axes[0, col], s, rf"$\sigma$ of $\hat r_{param}$ (eq. 8)"),
            (axes[1, col], r, rf"$\hat r_{param}$ (eq. 6)"),
        ):
            ax.errorbar(mean.index, mean[key], yerr=std[key], marker="o", capsize=3, label=bars)
            ax.set_ylabel(name)
        axes[0, col].set_title(label, fontsize="small")
        axes[0, col].legend(fontsize="x-small")
        axes[1, col].set_xlabel("ensemble size M")
        for ax in axes[:, col]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _title(fig, rf"Fig. 10: spread and residual $\hat r_{param}$ vs ensemble size", subsamples)
    return fig


def model_points(residuals: pd.DataFrame) -> pd.DataFrame:
    """Fig. 8's points: the last checkpoint of every ``mode=ensemble`` group, by generator size."""
    final = final_residuals(residuals)
    return final[final["mode"] == ENSEMBLE_MODE].sort_values("generator_params")


def model_study(residuals: pd.DataFrame, param: int = 0) -> Figure:
    """Fig. 8: final sigma_param (top) and r_param (bottom) of ensembles vs generator size, per batch size."""
    fig, axes = _panels(2, 1)
    points = model_points(residuals)
    for batch, g in points.groupby("disc_batch"):
        label = f"discriminator batch {batch}"
        axes[1, 0].plot(g["generator_params"], g[f"r_{param}"], marker="o", label=label)
        spread = g[g["members"] >= MIN_SIGMA_MEMBERS]
        axes[0, 0].plot(spread["generator_params"], spread[f"sigma_{param}"], marker="o", label=label)
    if points["members"].min() < MIN_SIGMA_MEMBERS:
        _note(axes[0, 0], f"{NO_SIGMA}: groups of 1 member left out")
    axes[0, 0].set_ylabel(rf"$\sigma$ of $\hat r_{param}$ (eq. 8)")
    axes[1, 0].set_ylabel(rf"$\hat r_{param}$ (eq. 6)")
    for ax in axes[:, 0]:
        _log_x(ax, points["generator_params"], "generator parameters")
        ax.legend(fontsize="small")
    what = rf"Fig. 8: final spread and residual $\hat r_{param}$ vs model size"
    _title(fig, f"{what} ({mode_name(ENSEMBLE_MODE)})", points)
    return fig
