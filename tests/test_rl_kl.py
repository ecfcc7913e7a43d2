"""The reward ~ sqrt(KL) fit of an RL training log (claims/bai_rl_kl/rl_kl.py)."""
from __future__ import annotations

import numpy as np
import pytest

from claims.bai_rl_kl import rl_kl


def test_reward_sqrt_kl_fit_recovers_an_exact_line():
    log = [{"step": i, "reward": 0.5 + 2.0 * np.sqrt(k * 4), "kl": k, "completions/mean_length": 4.0}
           for i, k in enumerate([0.0, 0.01, 0.04, 0.09, 0.25])]
    fit = rl_kl.reward_vs_sqrt_kl(log)
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(0.5) and fit["r2"] == pytest.approx(1.0)
    with pytest.raises(rl_kl.RLLogError, match="at least 3"):
        rl_kl.reward_vs_sqrt_kl(log[:2])
