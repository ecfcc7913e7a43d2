"""Claims of Bai et al. 2022, "Training a helpful and harmless assistant with RLHF" (seed 003, related
abstracts): the RL reward against the KL divergence of the policy from its initialisation, read from the
training log the tuned checkpoint ships with."""
import json

from claims.bai_rl_kl import rl_kl
from fixtures.catalogue import Param, claim
from lib.loading import resolve


@claim(
    "LFP-09",
    rule="Holds when, over the logged RL training steps, the least-squares fit of mean reward on sqrt(sequence "
         "KL to the initial policy) has slope above 0 (`slope`) and R² ≥ `min_r2` (`r2`).",
    statement="RL reward grows roughly linearly in sqrt(KL(policy, init))",
    shown="abstract: \"a roughly linear relationship between the RL reward and the square root of the KL divergence "
          "between the policy and its initialization\" (no figure quoted)",
    params={
        "rl_log": Param("the RL training log (JSON), a path inside the tuned checkpoint", type=str),
        "rl_log_key": Param("the key of that JSON holding the per-step list of reward and per-token KL", type=str),
        "min_r2": Param("R^2 of the fit of reward on sqrt(sequence KL) must reach this", 0.8),
    },
)
def test_lfp_09_reward_linear_in_sqrt_kl(params, subject, record):
    """Bai et al. 2022 (seed 003): "we find a roughly linear relationship between the RL reward and the
    square root of the KL divergence between the policy and its initialization". Fit of the logged mean
    reward on sqrt(sequence KL to the initial policy) over RL training."""
    log = json.loads((resolve(subject.checkpoints["tuned"]).path / params["rl_log"]).read_text())[params["rl_log_key"]]
    fit = rl_kl.reward_vs_sqrt_kl(log)
    record.figure("reward vs sqrt(KL) through RL training", rl_kl.fit_figure(fit))
    record.measure(slope=fit["slope"], intercept=fit["intercept"], r2=fit["r2"], r2_linear_in_kl=fit["r2_linear_in_kl"], n_steps=len(fit["steps"]))
    record.expect("slope", fit["slope"], ">", 0.0)
    record.expect("r2", fit["r2"], ">=", params["min_r2"])
