"""Chughtai, Chan & Nanda 2023, "A Toy Model of Universality"."""
from fixtures.catalogue import Paper

PAPER = Paper("chughtai_groups", 'Chughtai, Chan & Nanda 2023, "A Toy Model of Universality"', "seed003")
