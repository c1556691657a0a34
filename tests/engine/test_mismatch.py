"""Mismatch graphs (garbage at word boundaries, skippable words) against brute-force enumeration.

The reference (tests/engine/brute_force_mismatch.py) lays out the states of the definition by hand
for CTC-like and HMM-like topologies and enumerates every path; the graphs under test are built by
composing the topology FST, extended by a garbage state, with per-utterance transducers. Cases:
built-in CTC, relaxed CTC and HMM, and two user-built FSTs (a loop-free CTC and a 3-state HMM),
random tiny transcripts (repeated tokens, repeated words, empty transcripts), penalties, the
longest bypass, α and γ (penalties are not scaled by either).
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsalign
from examples.custom_topologies import minimal_ctc, three_state_hmm
from fsalign.engine.mismatch import GARBAGE_CODE, POSITION_BASE, MismatchOptions, MismatchTopology
from fsalign.errors import FsalignError
from tests.engine.brute_force_mismatch import brute_force_mismatch, expand_ctc_mismatch, expand_hmm_mismatch, num_paths

NUM_TOKENS = 3  # token ids 1..3; column 0 is blank/silence


def _case(kind, loops, words, gp, sp, K, gamma, ep=0.0):
    """(base topology, brute-force graph) of one case."""
    common = dict(garbage_penalty=gp, skip_penalty=sp, max_skip=K, gamma=gamma, entry_penalty=ep)
    if kind in ("ctc", "relaxed"):
        lab, blk = (0.6, 0.3) if loops else (None, None)
        cls = fsalign.CtcTopology if kind == "ctc" else fsalign.RelaxedTopology
        return cls(NUM_TOKENS + 1, 0, lab, blk), expand_ctc_mismatch(
            words, 0, lab, blk, relaxed=kind == "relaxed", garbage=NUM_TOKENS + 1, **common)
    if kind == "hmm":
        lab, sil = (0.5, 0.9) if loops else (None, None)
        return fsalign.HmmTopology(NUM_TOKENS + 1, 0, lab, sil), expand_hmm_mismatch(
            words, 0, lab, sil, garbage=NUM_TOKENS + 1, **common)
    if kind == "minimal_ctc":
        return minimal_ctc(NUM_TOKENS, blank_loop=0.4), expand_ctc_mismatch(
            words, 0, None, 0.4, token_loops=False, garbage=NUM_TOKENS + 1, **common)
    return three_state_hmm(NUM_TOKENS, 0.5, 0.9), expand_hmm_mismatch(
        words, 0, 0.5, 0.9, states_per_token=3, column=lambda k, j: 1 + 3 * (k - 1) + j,
        garbage=3 * NUM_TOKENS + 1, **common)


words_st = st.lists(st.lists(st.integers(1, NUM_TOKENS), min_size=1, max_size=2), min_size=0, max_size=3)
case_st = st.fixed_dictionaries({
    "kind": st.sampled_from(["ctc", "relaxed", "hmm", "minimal_ctc", "hmm3"]),
    "loops": st.booleans(),
    "words": words_st,
    "T": st.integers(1, 5),
    "gp": st.sampled_from([0.0, 0.7, 2.0]),
    "sp": st.sampled_from([0.0, 1.5, 3.0]),
    "ep": st.sampled_from([0.0, 1.0]),
    "K": st.sampled_from([1, 2, 8]),
    "alpha": st.sampled_from([1.0, 0.7]),
    "gamma": st.sampled_from([0.0, 0.3, 1.0]),
    "seed": st.integers(0, 2**16),
})  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(case_st)
def test_full_sum_and_viterbi_equal_brute_force(case):
    base, reference = _case(case["kind"], case["loops"], case["words"], case["gp"], case["sp"], case["K"],
                            case["gamma"], case["ep"])
    topo = MismatchTopology(base, MismatchOptions(case["gp"], case["sp"], case["K"], garbage_entry_penalty=case["ep"]))
    T, words = case["T"], case["words"]
    g = torch.Generator().manual_seed(case["seed"])
    log_probs = torch.randn(1, T, topo.num_labels, generator=g).log_softmax(-1)
    graphs = topo.compile([words])
    scales = dict(posterior_scale=case["alpha"], transition_scale=case["gamma"])
    total = float(fsalign.full_sum_scores(log_probs, torch.tensor([T]), graphs, **scales)[0])
    lse, best_score, best = brute_force_mismatch(reference, (case["alpha"] * log_probs[0]).tolist(), T, words)
    if math.isinf(lse):
        assert math.isinf(total)
        return
    assert total == pytest.approx(lse, abs=1e-4)
    ali = fsalign.viterbi_align(log_probs, torch.tensor([T]), graphs, **scales)[0]
    assert ali.score == pytest.approx(best_score, abs=1e-4)
    assert (tuple(ali.labels.tolist()), tuple(ali.skipped)) in best
    assert [w.index for w in ali.words] == [w for w in range(len(words)) if w not in ali.skipped]
    garbage = [t for t, c in enumerate(ali.labels.tolist()) if c == topo.garbage]
    assert [t for u in ali.untranscribed for t in range(u.start, u.end)] == garbage


@pytest.mark.parametrize("kind", ["ctc", "hmm", "hmm3"])
def test_every_path_once(kind):
    """With zero scores and penalties exp(full sum) counts the paths: the graphs hold each path once."""
    words, T = [[1, 2], [1], [3]], 5
    base, reference = _case(kind, True, words, 0.0, 0.0, 8, 0.0)
    topo = MismatchTopology(base, MismatchOptions(0.0, 0.0))
    total = fsalign.full_sum_scores(torch.zeros(1, T, topo.num_labels), torch.tensor([T]), topo.compile([words]),
                                    transition_scale=0.0)
    count = num_paths(reference, T)
    assert count > 20
    assert math.exp(float(total)) == pytest.approx(count, rel=1e-6)


def test_hand_checked_path():
    """HMM, words [1] [2] [3]: frames favour 1, garbage, garbage, 3 -> word 1 (token 2) skipped, frames 1-2 garbage."""
    topo = MismatchTopology(fsalign.HmmTopology(5, silence=0), MismatchOptions(garbage_penalty=0.5, skip_penalty=1.0))
    scores = torch.full((1, 4, topo.num_labels), -8.0)
    for t, column in enumerate([1, topo.garbage, topo.garbage, 3]):
        scores[0, t, column] = 0.0
    ali = fsalign.viterbi_align(scores, torch.tensor([4]), topo.compile([[[1], [2], [3]]]))[0]
    assert ali.labels.tolist() == [1, 5, 5, 3]
    assert ali.skipped == [1]
    assert [(w.index, w.start, w.end) for w in ali.words] == [(0, 0, 1), (2, 3, 4)]
    assert [(u.start, u.end) for u in ali.untranscribed] == [(1, 3)]
    # emissions 0; two garbage frames and one skip; entering garbage and restarting after it cost no transition
    assert ali.score == pytest.approx(2 * -0.5 - 1.0, abs=1e-5)


def test_repeated_words_say_which_was_skipped():
    """Neighbours with the same tokens: the path's codes name the word it skipped, not just a token."""
    topo = MismatchTopology(fsalign.HmmTopology(3), MismatchOptions(garbage_penalty=5.0, skip_penalty=0.1))
    scores = torch.full((1, 2, topo.num_labels), -9.0)
    scores[0, 0, 1] = scores[0, 1, 2] = 0.0  # word "1" spoken once, then token 2: two frames for three words
    ali = fsalign.viterbi_align(scores, torch.tensor([2]), topo.compile([[[1], [1], [2]]]))[0]
    assert len(ali.skipped) == 1 and ali.skipped[0] in (0, 1)
    assert [w.index for w in ali.words] == sorted({0, 1, 2} - set(ali.skipped))


def test_penalties_are_not_scaled_by_gamma():
    """With γ = 0 transitions vanish but the skip penalty stays: all-skipped costs 2 * skip penalty."""
    topo = MismatchTopology(fsalign.HmmTopology(3), MismatchOptions(garbage_penalty=0.0, skip_penalty=4.0))
    graphs = topo.compile([[[1], [2]]])
    scores = torch.full((1, 2, topo.num_labels), -20.0)
    scores[0, :, 0] = 0.0  # silence only
    ali = fsalign.viterbi_align(scores, torch.tensor([2]), graphs, transition_scale=0.0)[0]
    assert ali.skipped == [0, 1] and ali.score == pytest.approx(-8.0)


def test_engine_auto_uses_k2_and_chain_is_refused():
    topo = MismatchTopology(fsalign.CtcTopology(4))
    graphs = topo.compile([[[1, 2]]])
    scores = torch.randn(1, 5, topo.num_labels).log_softmax(-1)
    auto = fsalign.full_sum_scores(scores, torch.tensor([5]), graphs)
    assert float(auto) == pytest.approx(float(fsalign.full_sum_scores(scores, torch.tensor([5]), graphs, engine="k2")))
    with pytest.raises(FsalignError, match="chain engine"):
        fsalign.full_sum_scores(scores, torch.tensor([5]), graphs, engine="chain")


def test_soft_alignment_is_a_distribution_over_columns():
    topo = MismatchTopology(fsalign.HmmTopology(4))
    scores = torch.randn(2, 6, topo.num_labels).log_softmax(-1)
    v = fsalign.soft_alignment(scores, torch.tensor([6, 4]), topo.compile([[[1], [2, 3]], [[3]]]))
    assert torch.allclose(v[0].sum(-1), torch.ones(6), atol=1e-5)
    assert torch.allclose(v[1, :4].sum(-1), torch.ones(4), atol=1e-5) and float(v[1, 4:].abs().sum()) == 0


def test_every_word_may_be_skipped_so_one_frame_is_enough():
    topo = MismatchTopology(fsalign.HmmTopology(4))
    assert topo.compile([[[1, 2, 3], [1]], []]).min_frames.tolist() == [1, 1]


def test_graph_codes_columns_and_penalties():
    options = MismatchOptions(garbage_penalty=1.0, skip_penalty=6.0, max_skip=1, garbage_entry_penalty=0.5)
    topo = MismatchTopology(fsalign.CtcTopology(4), options)
    assert (topo.num_labels, topo.garbage, topo.non_token_labels) == (5, 4, (0, 4))
    fsa = topo.compile([[[1], [2]]]).fsa
    assert {GARBAGE_CODE, POSITION_BASE, POSITION_BASE + 1} <= set(fsa.aux_labels.tolist())
    # penalties: a garbage frame 1 (its first 1.5), a skip 6 (at most one word skipped at a time)
    labels, penalty = fsa.labels.numpy(), np.round(fsa.penalty.numpy(), 4)
    assert set(penalty[labels == 4]) <= {-1.0, -1.5, -7.5} and -1.0 in penalty[labels == 4]
    assert set(penalty[labels != 4]) <= {0.0, -6.0, -12.0} and -6.0 in penalty


@pytest.mark.parametrize("kwargs, message", [
    ({"garbage_penalty": -1.0}, "garbage penalty must be a finite number >= 0"),
    ({"skip_penalty": math.inf}, "skip penalty must be a finite number >= 0"),
    ({"max_skip": 0}, "max skip must be an integer >= 1"),
    ({"garbage_score": "mean"}, "garbage score must be one of"),
])  # fmt: skip
def test_options_are_checked(kwargs, message):
    with pytest.raises(FsalignError, match=message):
        MismatchOptions(**kwargs)


def test_a_mismatch_topology_is_not_extended_twice():
    topo = MismatchTopology(fsalign.HmmTopology(4))
    with pytest.raises(FsalignError, match="without mismatch"):
        MismatchTopology(topo)
