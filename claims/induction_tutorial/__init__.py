"""Nanda, TransformerLens induction circuit tutorial."""
from fixtures.catalogue import Paper

PAPER = Paper("induction_tutorial", 'Nanda, TransformerLens induction circuit tutorial', "seed002")
