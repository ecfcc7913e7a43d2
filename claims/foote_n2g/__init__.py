"""Foote et al. 2023, "Neuron to Graph: Interpreting Language Model Neurons at Scale"."""
from fixtures.catalogue import Paper

PAPER = Paper("foote_n2g", 'Foote et al. 2023, "Neuron to Graph: Interpreting Language Model Neurons at Scale"', "seed003")
