"""Olsson et al. 2022, "In-context Learning and Induction Heads"."""
from fixtures.catalogue import Paper

PAPER = Paper("olsson_icl", 'Olsson et al. 2022, "In-context Learning and Induction Heads"', "seed003")
