"""Claims of Bai et al. 2022, "Training a helpful and harmless assistant with RLHF" (seed 003, related
abstracts): the RL reward against the KL divergence of the policy from its initialisation, read from the
training log the tuned checkpoint ships with."""
import json

import pytest

from lib import lfp
from lib.loading import resolve

pytestmark = pytest.mark.seed003


@pytest.mark.LFP_09
def test_lfp_09_reward_linear_in_sqrt_kl(params, subject, record):
    """Bai et al. 2022 (seed 003): "we find a roughly linear relationship between the RL reward and the
    square root of the KL divergence between the policy and its initialization". Fit of the logged mean
    reward on sqrt(sequence KL to the initial policy) over RL training."""
    log = json.loads((resolve(subject.checkpoints["tuned"]).path / params["rl_log"]).read_text())[params["rl_log_key"]]
    fit = lfp.reward_vs_sqrt_kl(log)
    record.figure("reward vs sqrt(KL) through RL training", lfp.fit_figure(fit))
    record.measure(slope=fit["slope"], intercept=fit["intercept"], r2=fit["r2"], r2_linear_in_kl=fit["r2_linear_in_kl"], n_steps=len(fit["steps"]))
    record.expect("slope", fit["slope"], ">", 0.0)
    record.expect("r2", fit["r2"], ">=", params.get("min_r2", 0.8))
