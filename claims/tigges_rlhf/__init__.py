"""Tigges, "Reverse-engineering RLHF with TransformerLens" (blog post)."""
from fixtures.catalogue import Paper

PAPER = Paper("tigges_rlhf", 'Tigges, "Reverse-engineering RLHF with TransformerLens" (blog post)', "seed000")
