"""The two engines behind one API: the chain kernels and k2 give the same sums, marginals and paths.

k2 is the reference here (the chain kernels are also checked against brute force in
tests/engine/test_chain.py and tests/engine/test_brute_force.py).
"""
import pytest
import torch

import fsalign
from examples.custom_topologies import minimal_ctc
from fsalign.errors import FsalignError
from fsalign.scores.matrix import ScoreMatrix

TOPOLOGIES = {
    "ctc": fsalign.CtcTopology(7),
    "ctc_loops": fsalign.CtcTopology(7, label_loop=0.6, blank_loop=0.3),
    "relaxed": fsalign.RelaxedTopology(7, label_loop=0.5, blank_loop=0.5),
    "hmm": fsalign.HmmTopology(7),
    "hmm_silence_2": fsalign.HmmTopology(7, silence=2, label_loop=0.4, silence_loop=0.8),
}
# a one-frame utterance with a two-token transcript is infeasible under every topology
TRANSCRIPTS = [[[1, 3], [4, 4]], [[5]], [[6, 1, 1], [3], [4]], [], [[1, 5]]]
LENGTHS = torch.tensor([9, 14, 11, 3, 1])


def _inputs(topology, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = topology.num_labels
    log_probs = torch.randn(len(TRANSCRIPTS), 14, C, generator=g).log_softmax(-1)
    log_prior = torch.randn(len(TRANSCRIPTS), C, generator=g).log_softmax(-1)
    transcripts = [[[t if t != topology.non_token_labels[0] else 6 for t in w] for w in u] for u in TRANSCRIPTS]
    scales = dict(posterior_scale=0.7, prior_scale=0.3, log_prior=log_prior, transition_scale=0.6)
    return log_probs, topology.compile(transcripts), scales


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_chain_and_k2_give_the_same_totals_gradients_marginals_and_paths(name):
    log_probs, graphs, scales = _inputs(TOPOLOGIES[name])
    results = {}
    for engine in ("chain", "k2"):
        x = log_probs.clone().requires_grad_()
        total = fsalign.full_sum_scores(x, LENGTHS, graphs, engine=engine, **scales)
        total[torch.isfinite(total)].sum().backward()
        results[engine] = dict(
            total=total.detach(), grad=x.grad,
            v=fsalign.soft_alignment(log_probs, LENGTHS, graphs, engine=engine, **scales),
            paths=fsalign.viterbi_align(log_probs, LENGTHS, graphs, on_infeasible="skip", engine=engine, **scales))
    chain, k2 = results["chain"], results["k2"]
    assert chain["total"][-1] == float("-inf") and k2["total"][-1] == float("-inf")
    torch.testing.assert_close(chain["total"], k2["total"], atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(chain["grad"], k2["grad"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chain["v"], k2["v"], atol=1e-5, rtol=1e-4)
    assert chain["paths"][-1] is None and k2["paths"][-1] is None
    for a, b in zip(chain["paths"][:-1], k2["paths"][:-1]):  # random scores: no ties
        assert a.labels.tolist() == b.labels.tolist()
        assert a.tokens == b.tokens and a.words == b.words
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_auto_takes_the_chain_kernels_for_built_ins_and_k2_for_any_other_topology():
    builtin = fsalign.CtcTopology(5).compile([[[1, 2]]])
    custom = minimal_ctc(4, blank_loop=0.4).compile([[[1, 2]]])
    assert fsalign.engine.chain.resolve_engine(builtin) == "chain"
    assert fsalign.engine.chain.resolve_engine(builtin, "k2") == "k2"
    assert fsalign.engine.chain.resolve_engine(custom) == "k2"
    log_probs = torch.randn(1, 6, 5).log_softmax(-1)
    with pytest.raises(FsalignError, match="the chain engine needs a CTC, relaxed or HMM topology"):
        fsalign.full_sum_loss(log_probs, [6], custom, engine="chain")
    with pytest.raises(FsalignError, match=r"engine must be one of \('auto', 'chain', 'k2'\), got 'fast'"):
        fsalign.viterbi_align(log_probs, [6], builtin, engine="fast")


def test_nan_scores_are_refused_by_both_engines_naming_the_utterance():
    graphs = fsalign.HmmTopology(5).compile([[[1]], [[2, 3]]])
    log_probs = torch.randn(2, 6, 5).log_softmax(-1)
    log_probs[1, 4, 3] = float("nan")
    for engine in ("chain", "k2"):
        with pytest.raises(FsalignError, match="utterance 1"):
            fsalign.full_sum_loss(log_probs, [6, 6], graphs, engine=engine)
        with pytest.raises(FsalignError, match="utterance 1"):
            fsalign.viterbi_align(log_probs, [6, 6], graphs, engine=engine)


def test_a_score_matrix_sums_and_aligns_with_its_engine():
    log_probs, graphs, scales = _inputs(TOPOLOGIES["hmm"], seed=3)
    scales = fsalign.Scales(scales["posterior_scale"], scales["prior_scale"], scales["log_prior"],
                            scales["transition_scale"])
    chain = ScoreMatrix.from_posteriors(log_probs, LENGTHS, graphs, scales)
    k2 = ScoreMatrix.from_posteriors(log_probs, LENGTHS, graphs, scales)
    k2.engine = "k2"
    torch.testing.assert_close(chain.total(), k2.total(), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(chain.marginals(), k2.marginals(), atol=1e-5, rtol=1e-4)
    assert [a and a.tokens for a in chain.best_paths()] == [a and a.tokens for a in k2.best_paths()]
    k2.engine = "nonsense"
    with pytest.raises(FsalignError, match="engine must be one of"):
        k2.total()


def test_k2_full_sum_of_a_lattice_over_k2s_default_size_returns_the_chain_total():
    """B=8, T=3000, S=750: 36 M lattice states, past k2's default max_states (which made it loop forever)."""
    B, T, S = 8, 3000, 750
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(B, T, 8, generator=g).log_softmax(-1)
    lengths = torch.tensor([T - 8 * b for b in range(B)])
    ids = torch.randint(1, 8, (B, S), generator=g).tolist()
    graphs = fsalign.CtcTopology(8).compile([[row[i:i + 4] for i in range(0, S, 4)] for row in ids])
    k2 = fsalign.full_sum_scores(log_probs, lengths, graphs, engine="k2")
    chain = fsalign.full_sum_scores(log_probs, lengths, graphs, engine="chain")
    assert torch.isfinite(chain).all()
    torch.testing.assert_close(k2, chain, atol=1e-6, rtol=1e-9)
