"""Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF"."""
from fixtures.catalogue import Paper

PAPER = Paper("bai_rl_kl", 'Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF"', "seed003")
