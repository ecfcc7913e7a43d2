"""The figures the source papers show: logit-lens curves, attribution bars, patching heatmaps,
attention patterns. Each returns a matplotlib Figure for `ClaimRecord.figure`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=float)


def lines(series: Mapping[str, Sequence[float]], *, title: str, xlabel: str, ylabel: str,
          xticks: Sequence[str] | None = None):
    """One line per series over a shared x axis (e.g. logit-lens logit diff per layer, base vs tuned)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, ys in series.items():
        ys = _np(ys)
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=name)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, rotation=60, fontsize=7)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bars(values: Mapping[str, float] | Mapping[str, Sequence[float]], *, title: str, ylabel: str,
         labels: Sequence[str] | None = None):
    """Bars per label; a mapping of series draws grouped bars (e.g. before / after a patch)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    first = next(iter(values.values()))
    if np.ndim(_np(first)) == 0:
        names = list(values)
        ax.bar(names, [float(_np(v)) for v in values.values()], color="#4c72b0")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    else:
        n = len(_np(first))
        width = 0.8 / len(values)
        for i, (name, ys) in enumerate(values.items()):
            ax.bar(np.arange(n) + i * width, _np(ys), width, label=name)
        ax.set_xticks(np.arange(n) + 0.4 - width / 2, labels or [str(i) for i in range(n)], rotation=60, fontsize=7)
        ax.legend(fontsize=8)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set(title=title, ylabel=ylabel)
    fig.tight_layout()
    return fig


MAX_TICKS = 48


def heatmap(values, *, title: str, xlabel: str, ylabel: str, xticks: Sequence[str] | None = None,
            yticks: Sequence[str] | None = None, centre: bool = True, cbar: str = ""):
    """A [rows, cols] heatmap, diverging around 0 unless `centre=False` (e.g. layer x position)."""
    v = _np(values)
    fig, ax = plt.subplots(figsize=(min(max(4.0, 0.45 * v.shape[1] + 2), 16.0), min(max(3.0, 0.3 * v.shape[0] + 1.5), 16.0)))
    if centre:
        lim = float(np.nanmax(np.abs(v))) or 1.0
        im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(v, cmap="viridis", aspect="auto")
    for axis, n, labels in ((ax.xaxis, v.shape[1], xticks), (ax.yaxis, v.shape[0], yticks)):
        every = -(-n // MAX_TICKS)  # at most MAX_TICKS labels per axis (e.g. 144 heads: every third)
        labels = list(labels if labels is not None else range(n))
        axis.set_ticks(range(0, n, every), labels[::every], fontsize=7, rotation=60 if axis is ax.xaxis else 0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    return fig


def attention_pattern(pattern, tokens: Sequence[str], *, title: str):
    """A head's attention pattern [dest, src] with the prompt's tokens on both axes."""
    return heatmap(pattern, title=title, xlabel="source", ylabel="destination", xticks=tokens, yticks=tokens,
                   centre=False, cbar="attention")
