"""Marks et al. 2023, "Interpreting Learned Feedback Patterns in Large Language Models"."""
from fixtures.catalogue import Paper

PAPER = Paper("marks_lfp", 'Marks et al. 2023, "Interpreting Learned Feedback Patterns in Large Language Models"', "seed001")
