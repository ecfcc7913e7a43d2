"""Every figure kind renders to PNG through a claim record."""
import numpy as np
import torch

from fixtures.records import ClaimRecord
from lib import plots


def test_figures_render_into_a_record():
    r = ClaimRecord(claim="RLHF-05", subject="s")
    r.figure("lens", plots.lines({"base": [0.1, -0.2, 0.3], "tuned": torch.tensor([0.1, -0.2, 2.0])},
                                 title="logit lens", xlabel="layer", ylabel="logit diff"))
    r.figure("bars", plots.bars({"attn 0": 0.3, "mlp 0": -1.2}, title="attribution", ylabel="logit diff"))
    r.figure("grouped", plots.bars({"before": [-1.0, 0.5], "after": [1.0, 0.7]}, title="flip", ylabel="logit diff",
                                   labels=["canonical", "family"]))
    r.figure("heat", plots.heatmap(np.arange(12.0).reshape(3, 4) - 6, title="resid", xlabel="pos", ylabel="layer",
                                   xticks=["<bos>", "This", "movie", "was"]))
    r.figure("attn", plots.attention_pattern(torch.rand(4, 4).tril(), ["a", "b", "c", "d"], title="head 1.6"))
    assert [f.title for f in r.figures] == ["lens", "bars", "grouped", "heat", "attn"]
    assert all(f.png.startswith(b"\x89PNG") for f in r.figures)
