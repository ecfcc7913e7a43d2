"""Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability"."""
from fixtures.catalogue import Paper

PAPER = Paper("nanda_grokking", 'Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability"', "seed003")
