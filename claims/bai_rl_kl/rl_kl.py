"""RL reward against the KL divergence of the policy from its initialisation (Bai et al. 2022), read from
the training log a tuned checkpoint ships with: the fit of reward on sqrt(KL) and its figure."""
from __future__ import annotations

import numpy as np

from lib.errors import SuiteError


class RLLogError(SuiteError):
    """An RL training log the reward ~ sqrt(KL) fit cannot use."""


def reward_vs_sqrt_kl(log: list[dict]) -> dict:
    """Least-squares fit of the mean reward on sqrt(KL to the initial policy) over the logged steps. The
    log's KL is per token; the sequence KL is that times the mean completion length."""
    from scipy.stats import linregress

    rows = [r for r in log if "reward" in r and "kl" in r]
    if len(rows) < 3:
        raise RLLogError(f"the RL log has {len(rows)} steps with reward and kl; the fit needs at least 3")
    reward = np.array([r["reward"] for r in rows])
    kl = np.array([max(r["kl"], 0.0) * r.get("completions/mean_length", 1.0) for r in rows])
    sqrt_fit, lin_fit = linregress(np.sqrt(kl), reward), linregress(kl, reward)
    return {"steps": [r.get("step", i) for i, r in enumerate(rows)], "reward": reward, "kl": kl,
            "slope": float(sqrt_fit.slope), "intercept": float(sqrt_fit.intercept), "r2": float(sqrt_fit.rvalue ** 2),
            "r2_linear_in_kl": float(lin_fit.rvalue ** 2)}


def fit_figure(fit: dict):
    """Mean reward against sqrt(KL) per logged step, with the least-squares line."""
    import matplotlib.pyplot as plt

    x = np.sqrt(fit["kl"])
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    sc = ax.scatter(x, fit["reward"], c=fit["steps"], s=14, cmap="viridis")
    ax.plot(x, fit["intercept"] + fit["slope"] * x, color="black", lw=1,
            label=f"reward = {fit['intercept']:.2f} + {fit['slope']:.2f} sqrt(KL), R^2 = {fit['r2']:.2f}")
    fig.colorbar(sc, ax=ax, label="step")
    ax.set(title="RL reward vs sqrt(KL to the initial policy)", xlabel="sqrt(KL) (nats^0.5, per sequence)", ylabel="mean reward")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
