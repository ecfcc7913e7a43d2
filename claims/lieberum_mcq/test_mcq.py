"""Claims of Lieberum et al. 2023, "Does Circuit Analysis Interpretability Scale? Evidence from Multiple
Choice Capabilities in Chinchilla" (seed 003, arXiv:2307.09458): circuit analysis of how Chinchilla 70B
answers multiple-choice questions. No subject of that scale can be had, so the claim stays in the report
as not run."""
import pytest

from fixtures.catalogue import claim


@claim(
    "MCQ-01",
    rule="No verdict yet: the test records no check and is reported as not run on every subject (no subject of "
         "Chinchilla's scale, and no trained stand-in).",
    statement="MCQ output nodes form a small set; correct-letter heads are low-rank",
    shown="the abstract: a small set of output nodes, and heads whose query, key and value subspaces compress "
          "without loss of performance",
    no_subject_holds="no trained stand-in yet: a small transformer on synthetic multiple-choice items (answer text, options labelled A-D, the label asked for) is not built",
    no_subject_refuted="no trained stand-in yet, and so no untrained twin",
)
def test_mcq_01_correct_letter_heads(subject):
    """"We find that the existing techniques of logit attribution, attention pattern visualization, and
    activation patching naturally scale to Chinchilla, allowing us to identify and categorize a small
    set of `output nodes' ... we significantly compress the query, key and value subspaces of the head
    without loss of performance." (seed 003, Lieberum et al. 2023, arXiv:2307.09458.) Not run: no
    subject of that scale can be had; the subject's `unavailable` says why."""
    pytest.skip(f"subject {subject.name}: {subject.unavailable or 'no MCQ-answering circuit analysis at this scale'}")
