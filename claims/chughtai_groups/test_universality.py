"""Claims of Chughtai, Chan & Nanda 2023, "A Toy Model of Universality" (seed 003, arXiv:2302.03025):
networks compose elements of a finite group through its representations, and which representations a
network learns is arbitrary. No group-composition subject exists yet, so the claim stays in the report
as not run."""
import pytest

from fixtures.catalogue import claim


@claim(
    "UNIV-01",
    rule="No verdict yet: the test records no check and is reported as not run on every subject (no model "
         "trained on group composition).",
    statement="Group composition via representation theory; which circuits is arbitrary",
    shown="the abstract: an algorithm for composition in any finite group via representation theory; the "
          "circuits learned, and the order they develop in, are arbitrary",
)
def test_univ_01_group_composition_circuits(subject):
    """"We present a novel algorithm by which neural networks may implement composition for any finite
    group via mathematical representation theory ... for a given network the precise circuits learned
    -- as well as the order they develop -- are arbitrary." (seed 003, Chughtai et al. 2023,
    arXiv:2302.03025.) Not run until a group-composition subject exists; the subject's `unavailable` says why."""
    pytest.skip(f"subject {subject.name}: {subject.unavailable or 'no group-composition analysis yet'}")
