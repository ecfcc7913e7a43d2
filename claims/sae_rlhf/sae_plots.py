"""The figures of the SAE claims: spliced-in loss per layer (seed 004's bar chart) and training curves."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def splice_loss_bars(clean: float, spliced: Sequence[float], own_layer: int, *, title: str):
    """Per layer: the clean loss (green) with the extra loss of splicing the SAE in there (red) on top; a
    splice that lowers the loss shows as a red bar hanging below the clean loss."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    layers = range(len(spliced))
    extra = [s - clean for s in spliced]
    ax.bar(layers, [clean] * len(spliced), color="#55a868", label="clean loss")
    ax.bar(layers, extra, bottom=clean, color="#c44e52", label="extra loss with the SAE spliced in")
    ax.set_xticks(list(layers), [f"{l}*" if l == own_layer else str(l) for l in layers])
    ax.set(title=title, xlabel="layer (* = the layer the SAE was trained on)", ylabel="LM loss (nats/token)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(log: Mapping[str, Sequence[float]], keys: Sequence[str], *, title: str,
                    events: Sequence[int] = (), log_scale: Sequence[str] = ("loss", "mse")):
    """One panel per logged series over training steps; vertical lines at `events` (e.g. resampling);
    the series in `log_scale` on a log axis where they stay positive."""
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(range(1, len(log[key]) + 1), log[key], lw=0.8)
        for step in events:
            ax.axvline(step, color="#c44e52", lw=0.5, alpha=0.6)
        if key in log_scale and min(log[key]) > 0:
            ax.set_yscale("log")
        ax.set(title=key, xlabel="step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
