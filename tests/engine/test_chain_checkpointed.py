"""The checkpointed backtrace of the chain Viterbi against the ordinary kernel, the tie rule and k2.

The checkpointed backtrace must give the ordinary kernel's states and scores exactly (ties
included), for every segment length K, both implementations and every built-in topology; it is
taken exactly when the backpointers would exceed the memory budget.
"""
import pytest
import torch

import fsalign
from fsalign.engine import chain_numba, chain_torch
from fsalign.engine.chain import chain_from_topology, chain_viterbi
from tests.engine.test_chain import IMPLS, KINDS, _random_batch, _rule_path, _topology

SEGMENTS = [1, 2, 3, 5, 13, 14, 100]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkpointed_equals_ordinary_for_every_segment_length(kind, impl, dtype):
    _, _, scores, lengths, chain = _random_batch(kind, True, dtype, seed=11)
    best, states = chain_viterbi(scores, lengths, chain, impl)
    assert (best > -float("inf")).sum() >= 3  # feasible ones and (CTC) an infeasible one
    for k in SEGMENTS:
        got_best, got_states = chain_viterbi(scores, lengths, chain, impl, segment_frames=k)
        assert torch.equal(got_best, best) and torch.equal(got_states, states), k


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", IMPLS)
def test_checkpointed_keeps_the_tie_rule(kind, impl):
    topo, expand = _topology(kind, False)
    trs = [[[1, 2]], [[1], [1]], [[2, 2]], [[3]], [[1, 3], [2]]]
    g = torch.Generator().manual_seed(4)
    scores = torch.randint(-2, 1, (5, 9, 4), generator=g).float()  # integers: exact ties everywhere
    lengths = torch.tensor([6, 5, 4, 9, 8])
    chain = chain_from_topology(topo, trs, transition_scale=0.0)
    ties = 0
    for k in (1, 2, 4):
        best, states = chain_viterbi(scores, lengths, chain, impl, segment_frames=k)
        for b, words in enumerate(trs):
            L = int(lengths[b])
            want_score, want_path, count = _rule_path(expand(words), scores[b].tolist(), L, 0.0)
            assert float(best[b]) == want_score and tuple(states[b, :L].tolist()) == want_path
            ties += count > 1
    assert ties >= 6


@pytest.mark.parametrize("impl", IMPLS)
def test_budget_decides_which_backtrace_runs(impl, monkeypatch):
    _, _, scores, lengths, chain = _random_batch("hmm", True)
    B, T, _ = scores.shape
    cells = B * T * chain.labels.shape[1] * {"numba": 1, "torch": 12}[impl]
    want = chain_viterbi(scores, lengths, chain, impl)
    calls = []
    if impl == "numba":
        for name in ("viterbi", "viterbi_checkpointed"):
            real = getattr(chain_numba, name)
            monkeypatch.setattr(chain_numba, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    else:
        real = chain_torch.viterbi
        monkeypatch.setattr(chain_torch, "viterbi", lambda *a: calls.append(a[3]) or real(*a))
    for budget in (cells, cells - 1, 0):
        got = chain_viterbi(scores, lengths, chain, impl, memory_budget=budget)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if impl == "numba":
        assert calls == ["viterbi", "viterbi_checkpointed", "viterbi_checkpointed"]
    else:
        assert calls[0] is None and calls[1] >= 1 and calls[2] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_viterbi_align_with_a_tiny_budget_equals_k2(kind):
    topo, trs, scores, lengths, _ = _random_batch(kind, True, seed=2)
    graphs = topo.compile(trs)
    ref = fsalign.viterbi_align(scores, lengths, graphs, transition_scale=0.7, on_infeasible="skip", engine="k2")
    whole = fsalign.viterbi_align(scores, lengths, graphs, transition_scale=0.7, on_infeasible="skip")
    tiny = fsalign.viterbi_align(scores, lengths, graphs, transition_scale=0.7, on_infeasible="skip",
                                 memory_budget=0)
    for r, w, t in zip(ref, whole, tiny):
        assert (r is None) == (t is None) == (w is None)
        if r is not None:
            assert t.score == pytest.approx(r.score, abs=1e-4) and t.score == w.score
            assert torch.equal(t.labels, w.labels) and t.words == w.words


@pytest.mark.parametrize("impl", IMPLS)
def test_checkpointed_names_nan_frames_and_checks_its_arguments(impl):
    _, _, scores, lengths, chain = _random_batch("ctc", True, B=4)
    scores = scores.clone()
    scores[1, 7, 1] = float("nan")
    with pytest.raises(fsalign.FsalignError, match=r"utterance 1 \(first at frame 7\)"):
        chain_viterbi(scores, lengths, chain, impl, segment_frames=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(fsalign.FsalignError, match="segment_frames"):
            chain_viterbi(scores, lengths, chain, impl, segment_frames=bad)
    with pytest.raises(fsalign.FsalignError, match="memory_budget"):
        chain_viterbi(scores, lengths, chain, impl, memory_budget=-5)
