"""Gurnee et al. 2023, "Finding Neurons in a Haystack: Case Studies with Sparse Probing"."""
from fixtures.catalogue import Paper

PAPER = Paper("gurnee_sparse_probing", 'Gurnee et al. 2023, "Finding Neurons in a Haystack: Case Studies with Sparse Probing"', "seed003")
