"""Claims of the induction-circuit tutorial (seed 002): "Exploring the induction circuit with
activation patching", on the prompt "Her name was Alex Hart. Tomorrow at lunch time Alex"."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.causal import leftward_leak

pytestmark = pytest.mark.seed002


@pytest.mark.IND_04
def test_ind_04_information_flows_only_rightward(subject, params, model, record):
    """"Information only travels rightward and downward: patching at position p changes nothing
    before p." (seed 002, the resid-stream patching figures.) A property of every causal model:
    hypothesis chooses the layer, the position and the donor tokens; a patch that changes nothing
    at or after p would prove nothing, so its effect there is required too."""
    tokens = model.to_tokens(params["prompt"])
    n_pos, vocab = tokens.shape[1], model.cfg.d_vocab
    leaks, effects = [], []

    @settings(max_examples=params.get("examples", 25), deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(layer=st.integers(0, model.cfg.n_layers - 1), pos=st.integers(1, n_pos - 1), data=st.data())
    def patch_somewhere(layer, pos, data):
        donor = tokens.clone()
        donor[0, pos:] = torch.tensor(data.draw(st.lists(st.integers(0, vocab - 1), min_size=n_pos - pos, max_size=n_pos - pos)))
        donor[0, pos] = (tokens[0, pos] + 1 + data.draw(st.integers(0, vocab - 2))) % vocab
        before, after = leftward_leak(model, donor, tokens, layer, pos)
        leaks.append(before)
        effects.append(after)

    patch_somewhere()
    record.measure(patches_tried=len(leaks))
    record.expect("max_logit_change_before_p", max(leaks), "<=", params.get("atol", 1e-5))
    record.expect("min_logit_change_at_or_after_p", min(effects), ">", 0.0)
