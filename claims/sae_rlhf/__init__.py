"""Riggs et al. 2023, "Sparse Autoencoders for a More Interpretable RLHF" (blog post)."""
from fixtures.catalogue import Paper

PAPER = Paper("sae_rlhf", 'Riggs et al. 2023, "Sparse Autoencoders for a More Interpretable RLHF" (blog post)', "seed004")
