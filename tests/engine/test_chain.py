"""Chain kernels against the topology's own graphs, brute force, k2, finite differences.

References: ``_graph_arrays`` of the topology (the arcs every graph is built from), the
brute-force enumeration of tests/engine/brute_force.py (written from DESIGN.md alone), k2 through
``fsalign.full_sum_scores`` / ``viterbi_align`` on the same topology's graphs, and
``torch.autograd.gradcheck``. Both implementations (numba, vectorised torch) run every case.
"""
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsalign
from fsalign.engine.chain import Chain, chain_from_topology, chain_full_sum, chain_viterbi, path_labels
from tests.engine.brute_force import all_paths, brute_force, expand_ctc, expand_hmm, path_score

IMPLS = ["numba", "torch"]
KINDS = ["ctc", "relaxed", "hmm"]
C = 4  # column 0 is blank/silence, tokens 1..3
LOOPS = {"ctc": (0.6, 0.3), "relaxed": (0.6, 0.3), "hmm": (0.5, 0.9)}


def _topology(kind, loops, blank=0, num_labels=C):
    lab, other = LOOPS[kind] if loops else (None, None)
    if kind == "hmm":
        return (fsalign.HmmTopology(num_labels, silence=blank, label_loop=lab, silence_loop=other),
                lambda w: expand_hmm(w, blank, lab, other))
    cls = fsalign.RelaxedTopology if kind == "relaxed" else fsalign.CtcTopology
    return (cls(num_labels, blank=blank, label_loop=lab, blank_loop=other),
            lambda w: expand_ctc(w, blank, lab, other, relaxed=kind == "relaxed"))


def _chain_arcs(chain: Chain, b: int):
    """Arcs (src, dst, label, score) of chain b in the numbering of the k2 graphs."""
    n = int(chain.num_states[b])
    lab, lp, fw, sk = (x[b].tolist() for x in (chain.labels, chain.loop, chain.fwd, chain.skip))
    arcs = {(0, j + 1, lab[j], 0.0) for j in range(min(n, 2))}
    arcs |= {(n + 1 - k, n + 1, -1, 0.0) for k in range(1, min(n, 2) + 1)}
    for j in range(n):
        arcs.add((j + 1, j + 1, lab[j], lp[j]))
        for d in (1, 2):
            if j + d < n and (d == 1 or sk[j]):
                arcs.add((j + 1, j + d + 1, lab[j + d], fw[j]))
    return arcs


TRANSCRIPTS = [[[1, 1], [2]], [[3]], [], [[2, 1, 2], [2]], [[1], [1], [1, 1]]]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loops", [True, False])
def test_chain_has_the_arcs_of_the_topologys_graphs(kind, loops):
    topo, _ = _topology(kind, loops)
    chain = chain_from_topology(topo, TRANSCRIPTS)
    graphs = topo.compile(TRANSCRIPTS)
    assert chain.min_frames.tolist() == graphs.min_frames.tolist()
    for b, words in enumerate(TRANSCRIPTS):
        src, dst, lab, score, _ = topo._graph_arrays(words)
        want = {(int(s), int(d), int(c), round(float(x), 5)) for s, d, c, x in zip(src, dst, lab, score)}
        got = {(s, d, c, round(float(np.float32(x)), 5)) for s, d, c, x in _chain_arcs(chain, b)}
        assert got == want
        tokens = [t for w in words for t in w]
        n = int(chain.num_states[b])
        pos = chain.positions[b, :n]
        assert chain.labels[b, :n][pos >= 0].tolist() == tokens and pos[pos >= 0].tolist() == list(range(len(tokens)))


def _hops(starts, edges, n):
    """Fewest states on a walk from ``starts`` to every state (breadth first), None if unreachable."""
    dist = [None] * n
    frontier = sorted(starts)
    d = 1
    while frontier:
        for s in frontier:
            dist[s] = d
        frontier = sorted({t for f, t in edges if f in frontier and dist[t] is None})
        d += 1
    return dist


@pytest.mark.parametrize("kind", KINDS)
def test_band_is_what_paths_can_reach(kind):
    topo, expand = _topology(kind, True)
    chain = chain_from_topology(topo, TRANSCRIPTS)
    for b, words in enumerate(TRANSCRIPTS):
        e = expand(words)
        n = len(e.labels)
        assert n == int(chain.num_states[b])
        first = _hops(e.initial, e.moves, n)
        rest = _hops(e.finals, {(t, f) for f, t in e.moves}, n)
        assert chain.first_frame[b, :n].tolist() == [d - 1 for d in first]
        assert chain.min_rest[b, :n].tolist() == rest
        assert int(chain.min_frames[b]) == min(first[f] for f in e.finals)


def _scores(case, B, T, dtype):
    g = torch.Generator().manual_seed(case["seed"])
    log_probs = torch.randn(B, T, C, generator=g, dtype=torch.float64).log_softmax(-1)
    prior = {"none": None, "C": torch.randn(C, generator=g, dtype=torch.float64).log_softmax(-1),
             "BC": torch.randn(B, C, generator=g, dtype=torch.float64).log_softmax(-1)}[case["prior"]]
    beta = case["beta"] if prior is not None else 0.0
    scores = log_probs * case["alpha"]
    if prior is not None:
        scores = scores - beta * (prior if prior.ndim == 1 else prior[:, None, :])
    return log_probs.to(dtype), prior, beta, scores.to(dtype)


case_st = st.fixed_dictionaries({
    "kind": st.sampled_from(KINDS),
    "loops": st.booleans(),
    "transcripts": st.lists(st.lists(st.lists(st.integers(1, C - 1), min_size=1, max_size=2), max_size=2),
                            min_size=1, max_size=3),
    "lengths": st.lists(st.integers(1, 5), min_size=3, max_size=3),
    "alpha": st.sampled_from([1.0, 0.5]),
    "beta": st.sampled_from([0.0, 0.3, 1.0]),
    "gamma": st.sampled_from([0.0, 0.3, 1.0, 2.0]),
    "prior": st.sampled_from(["none", "C", "BC"]),
    "dtype": st.sampled_from([torch.float32, torch.float64]),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=60, deadline=None)
@given(case_st)
def test_full_sum_and_viterbi_equal_brute_force_and_k2(case):
    topo, expand = _topology(case["kind"], case["loops"])
    trs = case["transcripts"]
    B = len(trs)
    lengths = torch.tensor(case["lengths"][:B])
    T = int(lengths.max())
    log_probs, prior, beta, scores = _scores(case, B, T, case["dtype"])
    chain = chain_from_topology(topo, trs, transition_scale=case["gamma"])
    graphs = topo.compile(trs)
    scales = dict(posterior_scale=case["alpha"], prior_scale=beta, log_prior=prior, transition_scale=case["gamma"])
    k2_total = fsalign.full_sum_scores(log_probs.float(), lengths, graphs, engine="k2", **scales)
    k2_best = fsalign.viterbi_align(log_probs.float(), lengths, graphs, on_infeasible="skip", engine="k2", **scales)
    tol = dict(abs=1e-4, rel=1e-5) if case["dtype"] == torch.float32 else dict(abs=1e-9, rel=1e-12)
    for impl in IMPLS:
        total = chain_full_sum(scores, lengths, chain, impl)
        best, states = chain_viterbi(scores, lengths, chain, impl)
        labels = path_labels(states, chain)
        for b, words in enumerate(trs):
            L = int(lengths[b])
            lse, mx, argmax = brute_force(expand(words), scores[b].double().tolist(), L, gamma=case["gamma"])
            if lse == -math.inf:
                assert total[b] == -math.inf and best[b] == -math.inf and k2_best[b] is None
                assert (states[b] == -1).all()
                continue
            assert float(total[b]) == pytest.approx(lse, **tol)
            assert float(best[b]) == pytest.approx(mx, **tol)
            assert float(total[b]) == pytest.approx(float(k2_total[b]), abs=1e-4, rel=1e-5)
            assert float(best[b]) == pytest.approx(k2_best[b].score, abs=1e-4, rel=1e-5)
            assert tuple(labels[b, :L].tolist()) in argmax
            assert (states[b, L:] == -1).all()


def _random_batch(kind, loops, dtype=torch.float32, seed=0, B=5, T=14, gamma=0.7):
    topo, _ = _topology(kind, loops)
    trs = [[[1, 2], [2, 2]], [[3], [1, 1]], [[3]], [], [[2, 2, 2]]][:B]
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(B, T, C, generator=g, dtype=torch.float64) * 2).log_softmax(-1).to(dtype)
    lengths = torch.tensor([9, 14, 1, 3, 2][:B])  # last one infeasible for CTC (3 frames needed)
    return topo, trs, scores, lengths, chain_from_topology(topo, trs, transition_scale=gamma)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_equals_k2s_and_infeasible_has_zero_gradient(kind, dtype):
    topo, trs, scores, lengths, chain = _random_batch(kind, True, dtype)
    x = scores.float().clone().requires_grad_(True)
    ref = fsalign.full_sum_scores(x, lengths, topo.compile(trs), transition_scale=0.7, engine="k2")
    finite = torch.isfinite(ref)
    (ref_grad,) = torch.autograd.grad(ref[finite].sum(), x)
    for impl in IMPLS:
        y = scores.clone().requires_grad_(True)
        total = chain_full_sum(y, lengths, chain, impl)
        assert torch.equal(torch.isfinite(total), finite)
        (grad,) = torch.autograd.grad(total.clamp(min=-1e9).sum(), y)  # infeasible ones too
        torch.testing.assert_close(total[finite], ref[finite], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(grad.float(), ref_grad, atol=2e-5, rtol=1e-4)
        assert grad.dtype == dtype
        padding = torch.arange(scores.shape[1])[None, :] >= lengths[:, None]
        assert (grad[~finite] == 0).all() and (grad[padding] == 0).all()
    if kind == "ctc":
        assert not finite[4]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_equals_finite_differences(kind, impl):
    _, _, scores, lengths, chain = _random_batch(kind, True, torch.float64, B=3, T=6)
    lengths = torch.tensor([6, 4, 1])
    x = scores.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: chain_full_sum(s, lengths, chain, impl), (x,), eps=1e-6, atol=1e-7)


def _rule_path(e, scores, T, gamma):
    """The tie rule from its definition: among best state paths, the largest read backwards."""
    paths = all_paths(e, T)
    s = [path_score(e, p, scores, 1.0, 0.0, None, gamma) for p in paths]
    best = max(s)
    return best, max((p for p, x in zip(paths, s) if x == best), key=lambda p: p[::-1]), s.count(best)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", IMPLS)
def test_ties_are_broken_by_the_documented_rule(kind, impl):
    topo, expand = _topology(kind, False)
    trs = [[[1, 2]], [[1], [1]], [[2, 2]], [[3]]]
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(-2, 1, (4, 6, C), generator=g).float()  # integers: exact ties everywhere
    lengths = torch.tensor([6, 5, 4, 6])
    chain = chain_from_topology(topo, trs, transition_scale=0.0)
    best, states = chain_viterbi(scores, lengths, chain, impl)
    ties = 0
    for b, words in enumerate(trs):
        L = int(lengths[b])
        want_score, want_path, count = _rule_path(expand(words), scores[b].tolist(), L, 0.0)
        assert float(best[b]) == want_score and tuple(states[b, :L].tolist()) == want_path
        ties += count > 1
    assert ties >= 3  # the rule decided


def _forced_align_rule(scores, chain, L, dtype):
    """Max-plus DP as torchaudio 2.11's forced_align: sums in ``dtype``; x0 (stay) unless x2 > x1
    and x2 > x0 (skip) or x1 > x0 and x1 > x2 (advance); last state unless the one before is larger."""
    n = int(chain.num_states[0])
    lab, sk = chain.labels[0, :n].tolist(), chain.skip[0].tolist()
    a = np.full(n, -np.inf, dtype)
    a[:2] = [scores[0, lab[j]] for j in range(min(n, 2))]
    bps = []
    for t in range(1, L):
        new, bp = np.full(n, -np.inf, dtype), np.zeros(n, int)
        for j in range(n):
            x0, x1 = a[j], a[j - 1] if j >= 1 else -np.inf
            x2 = a[j - 2] if j >= 2 and sk[j - 2] else -np.inf
            k = 2 if x2 > x1 and x2 > x0 else 1 if x1 > x0 and x1 > x2 else 0
            new[j], bp[j] = dtype((x0, x1, x2)[k]) + dtype(scores[t, lab[j]]), k
        a = new
        bps.append(bp)
    j = n - 1 if a[n - 1] > a[n - 2] else n - 2
    path = [j]
    for bp in reversed(bps):
        j -= bp[j]
        path.append(j)
    return tuple(path[::-1])


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_scores_are_summed_in_float64(impl):
    """Differences below float32 resolution of the running sums still decide the best path."""
    topo, expand = _topology("ctc", False)
    T = 6
    steps = torch.tensor([[2, 2, 0, 1], [1, 0, 1, 1], [1, 2, 2, 1], [2, 2, 1, 1], [0, 1, 0, 1], [0, 2, 2, 0]])
    ulp = float(np.spacing(np.float32(3000.0)))  # one float32 step of the scores, 1/8 of the sums'
    scores = (-3000.0 + steps * ulp).float()[None]
    chain = chain_from_topology(topo, [[[1, 2]]], transition_scale=0.0)
    best, states = chain_viterbi(scores, [T], chain, impl)
    e = expand([[1, 2]])
    want_score, want_path, count = _rule_path(e, scores[0].double().tolist(), T, 0.0)
    assert count == 1 and tuple(states[0].tolist()) == want_path and float(best[0]) == want_score
    assert _forced_align_rule(scores[0].numpy(), chain, T, np.float64) == want_path
    naive = _forced_align_rule(scores[0].numpy(), chain, T, np.float32)  # the float32 sums decide
    assert path_score(e, naive, scores[0].double().tolist(), 1.0, 0.0, None, 0.0) < want_score


@pytest.mark.parametrize("impl", IMPLS)
def test_a_tie_between_advance_and_skip_is_not_a_reason_to_stay(impl):
    """x1 == x2 > x0: the rule advances; forced_align's rule stays, on a lower-scoring path."""
    topo, expand = _topology("ctc", False)
    scores = torch.tensor([[[0, -1, -2, -2], [0, -1, -1, -1], [0, -1, -2, 0], [-2, -2, 0, -1], [-2, -2, -1, 0]]],
                          dtype=torch.float32)
    chain = chain_from_topology(topo, [[[1, 2]]], transition_scale=0.0)
    best, states = chain_viterbi(scores, [5], chain, impl)
    e = expand([[1, 2]])
    want_score, want_path, count = _rule_path(e, scores[0].tolist(), 5, 0.0)
    assert count > 1 and tuple(states[0].tolist()) == want_path and float(best[0]) == want_score
    stays = _forced_align_rule(scores[0].numpy(), chain, 5, np.float64)
    assert path_score(e, stays, scores[0].tolist(), 1.0, 0.0, None, 0.0) < want_score


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_in_a_valid_frame_is_named_and_padding_or_entries_no_path_reads_are_ignored(impl):
    topo, trs, scores, lengths, chain = _random_batch("ctc", True, B=4)
    scores = scores.clone()
    scores[0, lengths[0]:] = float("nan")  # padding
    scores[1, :, 2] = float("inf")  # a column utterance 1 never reads
    scores[3, lengths[3]:, 0] = float("nan")
    scores[2, 0, 0] = float("inf")  # utterance 2's one frame must be its token: no path reads blank
    total = chain_full_sum(scores, lengths, chain, impl)
    assert torch.isfinite(total).all()
    assert (chain_viterbi(scores, lengths, chain, impl)[0] > -math.inf).all()
    scores[1, 7, 1] = float("nan")
    scores[1, 9, 0] = -float("inf")
    scores[2, 0, 3] = float("inf")
    for fn in (chain_full_sum, chain_viterbi):
        with pytest.raises(fsalign.FsalignError,
                           match=r"utterance 1 \(first at frame 7\), utterance 2 \(first at frame 0\)"):
            fn(scores, lengths, chain, impl)


@pytest.mark.parametrize("kind", KINDS)
def test_implementations_agree_and_lengths_may_come_in_any_order(kind):
    topo, trs, scores, lengths, chain = _random_batch(kind, True, seed=5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    pchain = chain_from_topology(topo, [trs[i] for i in perm], transition_scale=0.7)
    out = {}
    for impl in IMPLS:
        x = scores.clone().requires_grad_(True)
        total = chain_full_sum(x, lengths, chain, impl)
        (grad,) = torch.autograd.grad(total[torch.isfinite(total)].sum(), x)
        out[impl] = (total, grad) + chain_viterbi(scores, lengths, chain, impl)
        ptotal = chain_full_sum(scores[perm], lengths[perm], pchain, impl)
        pbest, pstates = chain_viterbi(scores[perm], lengths[perm].tolist(), pchain, impl)
        assert torch.equal(ptotal, total[perm]) and torch.equal(pbest, out[impl][2][perm])
        assert torch.equal(pstates, out[impl][3][perm])
    (t1, g1, b1, s1), (t2, g2, b2, s2) = out["numba"], out["torch"]
    torch.testing.assert_close(t1, t2, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-6)
    assert torch.equal(b1, b2) and torch.equal(s1, s2)


def test_parallel_numba_equals_serial_and_strided_scores_are_read_in_place():
    _, _, scores, lengths, chain = _random_batch("hmm", True, torch.float64)
    strided = scores.transpose(0, 1).contiguous().transpose(0, 1)  # (B, T, C) view of (T, B, C) memory
    assert not strided.is_contiguous()
    threads = torch.get_num_threads()
    results = []
    try:
        for n, s in itertools.product((1, 2), (scores, strided)):
            torch.set_num_threads(n)
            x = s.clone() if s.is_contiguous() else s.detach().requires_grad_(True)
            x.requires_grad_(True)
            total = chain_full_sum(x, lengths, chain, "numba")
            (grad,) = torch.autograd.grad(total[torch.isfinite(total)].sum(), x)
            results.append((total, grad) + chain_viterbi(s, lengths, chain, "numba"))
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], r))


def test_one_frame_and_empty_transcripts():
    for kind in KINDS:
        topo, _ = _topology(kind, True)
        chain = chain_from_topology(topo, [[], [[2]], [[1, 1]]])
        scores = torch.tensor([[[-1.0, -2.0, -3.0, -4.0]]]).expand(3, 1, C)
        for impl in IMPLS:
            total = chain_full_sum(scores, [1, 1, 1], chain, impl)
            best, states = chain_viterbi(scores, [1, 1, 1], chain, impl)
            assert total.tolist()[:2] == [-1.0, -3.0] and best.tolist()[:2] == [-1.0, -3.0]
            assert states.tolist()[:2] == [[0], [1]] and total[2] == best[2] == -math.inf


def test_input_errors_are_reported():
    topo, trs, scores, lengths, chain = _random_batch("ctc", True)
    with pytest.raises(fsalign.FsalignError, match="lengths must be in 1..T=14"):
        chain_viterbi(scores, torch.tensor([0, 14, 1, 3, 15]), chain)
    with pytest.raises(fsalign.FsalignError, match="5 utterances but the chain has 2"):
        chain_full_sum(scores, lengths, chain_from_topology(topo, trs[:2]))
    with pytest.raises(fsalign.FsalignError, match="shape \\(B, T, C\\)"):
        chain_viterbi(scores[0], lengths, chain)
    with pytest.raises(fsalign.FsalignError, match="uses column 3, but scores has C=3"):
        chain_viterbi(scores[..., :3], lengths, chain)
    with pytest.raises(fsalign.FsalignError, match="implementation must be one of"):
        chain_viterbi(scores, lengths, chain, "k2")
    with pytest.raises(fsalign.FsalignError, match="utterance 0, word 0: token id 0"):
        chain_from_topology(topo, [[[0]]])
    from examples.custom_topologies import minimal_ctc
    with pytest.raises(fsalign.FsalignError, match="CTC, relaxed or HMM topology"):
        chain_from_topology(minimal_ctc(3), trs)


def test_blank_on_another_column_and_float16_scores():
    topo, expand = _topology("ctc", True, blank=2, num_labels=5)
    trs = [[[0, 1]], [[3, 3]]]
    chain = chain_from_topology(topo, trs)
    scores = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(1)).log_softmax(-1).half()
    graphs = topo.compile(trs)
    ref = fsalign.full_sum_scores(scores.float(), [6, 5], graphs, engine="k2")
    for impl in IMPLS:
        torch.testing.assert_close(chain_full_sum(scores, [6, 5], chain, impl), ref, atol=1e-4, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    _, _, scores, lengths, chain = _random_batch("ctc", True)
    out = []
    for device in ("cpu", "cuda"):
        x = scores.to(device).requires_grad_(True)
        total = chain_full_sum(x, lengths, chain.to(device))
        (grad,) = torch.autograd.grad(total[torch.isfinite(total)].sum(), x)
        out.append([t.cpu() for t in (total.detach(), grad) + chain_viterbi(x, lengths, chain.to(device))])
    (t1, g1, b1, s1), (t2, g2, b2, s2) = out
    torch.testing.assert_close(t1, t2, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-6)
    assert torch.equal(b1, b2) and torch.equal(s1, s2)


_THREADS_SCRIPT = """
import torch, fsalign
from fsalign.engine.chain import chain_full_sum, chain_viterbi, graphs_chain
assert torch.get_num_threads() == 1
topo = fsalign.HmmTopology(6)
graphs = topo.compile([[[1, 2], [3]], [[4, 5]]])
log_probs = torch.randn(2, 20, 6).log_softmax(-1).requires_grad_(True)
lengths = torch.tensor([20, 15])
chain = graphs_chain(graphs, 1.0, "cpu")
chain_full_sum(log_probs, lengths, chain, "numba").sum().backward()
chain_viterbi(log_probs.detach(), lengths, chain, "numba")
print(torch.get_num_threads())
"""


def test_the_numba_kernels_leave_torchs_thread_count_as_it_was():
    # numba's OpenMP pool starts with all cores and, unless undone, takes torch's setting with it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1"
