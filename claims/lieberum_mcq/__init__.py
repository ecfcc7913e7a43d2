"""Lieberum et al. 2023, "Does Circuit Analysis Interpretability Scale? Evidence from Multiple Choice Capabilities in Chinchilla"."""
from fixtures.catalogue import Paper

PAPER = Paper("lieberum_mcq", 'Lieberum et al. 2023, "Does Circuit Analysis Interpretability Scale? Evidence from Multiple Choice Capabilities in Chinchilla"', "seed003")
