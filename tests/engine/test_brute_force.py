"""Full-sum and Viterbi equal brute-force enumeration of all state paths.

Built-in topologies (CTC, relaxed, HMM) and two user-built FSTs (3-state HMM,
minimal CTC), over random tiny cases: repeated tokens, one-token and empty
transcripts, one-frame utterances, scales α, β, γ, (C,) and (B, C) priors.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsalign
from examples.custom_topologies import minimal_ctc, three_state_hmm
from tests.engine.brute_force import brute_force, expand_ctc, expand_hmm

NUM_TOKENS = 3  # token ids 1..3; column 0 is blank/silence


def _topology(kind, loops):
    C = NUM_TOKENS + 1
    if kind == "ctc":
        lab, blk = (0.6, 0.3) if loops else (None, None)
        return (fsalign.CtcTopology(C, blank=0, label_loop=lab, blank_loop=blk),
                lambda w: expand_ctc(w, 0, lab, blk))
    if kind == "relaxed":
        lab, blk = (0.6, 0.3) if loops else (None, None)
        return (fsalign.RelaxedTopology(C, blank=0, label_loop=lab, blank_loop=blk),
                lambda w: expand_ctc(w, 0, lab, blk, relaxed=True))
    if kind == "hmm":
        lab, sil = (0.5, 0.9) if loops else (None, None)
        return (fsalign.HmmTopology(C, silence=0, label_loop=lab, silence_loop=sil),
                lambda w: expand_hmm(w, 0, lab, sil))
    if kind == "minimal_ctc":
        return minimal_ctc(NUM_TOKENS, blank_loop=0.4), lambda w: expand_ctc(
            w, 0, None, 0.4, token_loops=False)
    if kind == "hmm3":
        return three_state_hmm(NUM_TOKENS, 0.5, 0.9), lambda w: expand_hmm(
            w, 0, 0.5, 0.9, states_per_token=3, column=lambda k, j: 1 + 3 * (k - 1) + j)
    raise ValueError(kind)


KINDS = ["ctc", "relaxed", "hmm", "minimal_ctc", "hmm3"]

words_st = st.lists(st.lists(st.integers(1, NUM_TOKENS), min_size=1, max_size=2), min_size=0, max_size=2)
case_st = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "loops": st.booleans(),
        "transcripts": st.lists(words_st, min_size=1, max_size=3),
        "lengths": st.lists(st.integers(1, 5), min_size=3, max_size=3),
        "alpha": st.sampled_from([1.0, 0.5, 0.7]),
        "beta": st.sampled_from([0.0, 0.3, 1.0]),
        "gamma": st.sampled_from([0.0, 0.3, 1.0]),
        "prior": st.sampled_from(["none", "C", "BC"]),
        "seed": st.integers(0, 2**16),
        "engine": st.sampled_from(["auto", "k2"]),
    }
)


def _inputs(case, topo):
    B = len(case["transcripts"])
    lengths = torch.tensor(case["lengths"][:B])
    T = int(lengths.max())
    g = torch.Generator().manual_seed(case["seed"])
    C = topo.num_labels
    log_probs = torch.randn(B, T, C, generator=g).log_softmax(-1)
    log_prior = None
    if case["prior"] == "C":
        log_prior = torch.randn(C, generator=g).log_softmax(-1)
    elif case["prior"] == "BC":
        log_prior = torch.randn(B, C, generator=g).log_softmax(-1)
    beta = case["beta"] if log_prior is not None else 0.0
    return log_probs, lengths, log_prior, beta


@settings(max_examples=150, deadline=None)
@given(case_st)
def test_full_sum_and_viterbi_equal_brute_force(case):
    topo, expand = _topology(case["kind"], case["loops"])
    graphs = topo.compile(case["transcripts"])
    log_probs, lengths, log_prior, beta = _inputs(case, topo)
    scales = dict(posterior_scale=case["alpha"], prior_scale=beta, log_prior=log_prior,
                  transition_scale=case["gamma"])
    total = fsalign.full_sum_scores(log_probs, lengths, graphs, engine=case["engine"], **scales)
    alis = fsalign.viterbi_align(log_probs, lengths, graphs, on_infeasible="skip", engine=case["engine"], **scales)
    for b, words in enumerate(case["transcripts"]):
        T = int(lengths[b])
        prior_b = None if log_prior is None else (log_prior if log_prior.ndim == 1 else log_prior[b])
        lse, best, argmax_labels = brute_force(
            expand(words), log_probs[b].tolist(), T, case["alpha"], beta,
            None if prior_b is None else prior_b.tolist(), case["gamma"])
        if lse == -math.inf:
            assert total[b] == -math.inf
            assert alis[b] is None
            assert int(graphs.min_frames[b]) > T
            continue
        assert int(graphs.min_frames[b]) <= T
        assert float(total[b]) == pytest.approx(lse, abs=1e-4, rel=1e-5)
        assert alis[b].score == pytest.approx(best, abs=1e-4, rel=1e-5)
        assert tuple(alis[b].labels.tolist()) in argmax_labels


@pytest.mark.parametrize("kind", KINDS)
def test_min_frames_is_the_shortest_brute_force_path(kind):
    topo, expand = _topology(kind, True)
    transcripts = [[[1, 1]], [[1], [1, 2]], [[2]], [], [[3, 3, 3]]]
    graphs = topo.compile(transcripts)
    for b, words in enumerate(transcripts):
        needed = next(T for T in range(1, 20)
                      if brute_force(expand(words), [[0.0] * topo.num_labels] * T, T)[0] > -math.inf)
        assert int(graphs.min_frames[b]) == needed


@pytest.mark.parametrize("kind", ["ctc", "relaxed", "hmm"])
def test_builtin_graphs_equal_composition_of_their_fst(kind):
    """The chain kernels on the built-in graphs and k2 on k2.compose(topo.fst, transcript) agree."""
    topo, _ = _topology(kind, True)
    transcripts = [[[1, 1], [2]], [[3]], [], [[2, 1, 2], [2]]]
    direct = topo.compile(transcripts)
    composed = fsalign.Topology._compile_fsa(topo, direct.transcripts)
    via_fst = fsalign.TrainingGraphs(composed, direct.transcripts, direct.min_frames, topo)
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(4, 9, topo.num_labels, generator=g).log_softmax(-1)
    lengths = torch.tensor([9, 4, 2, 7])
    for scales in [dict(), dict(posterior_scale=0.5, transition_scale=0.3)]:
        a = fsalign.full_sum_scores(log_probs, lengths, direct, **scales)
        b = fsalign.full_sum_scores(log_probs, lengths, via_fst, engine="k2", **scales)
        torch.testing.assert_close(a, b)
        va = fsalign.viterbi_align(log_probs, lengths, direct, **scales)
        vb = fsalign.viterbi_align(log_probs, lengths, via_fst, engine="k2", **scales)
        for x, y in zip(va, vb):
            assert x.score == pytest.approx(y.score, abs=1e-5)
            assert x.tokens == y.tokens and x.words == y.words
