"""Expected token boundaries against enumeration of every path (tests/engine/brute_force.py)."""
import math

import pytest
import torch

from fsalign.engine.chain import chain_from_topology
from fsalign.engine.occupancy import expected_position_frames, state_occupancy
from tests.engine.brute_force import all_paths, path_score
from tests.engine.test_chain import IMPLS, KINDS, C, _topology

TRANSCRIPTS = [[[1, 1], [2]], [[3]], [], [[2, 1], [2]]]
LENGTHS = [6, 3, 2, 5]


def _brute_force(expansion, scores, T):
    """(occupancy (T, N), {position: (E[start], E[end])}) under P(path) ∝ exp(path score)."""
    paths = all_paths(expansion, T)
    weights = [path_score(expansion, p, scores, 1.0, 0.0, None, 1.0) for p in paths]
    m = max(weights)
    probs = [math.exp(w - m) for w in weights]
    z = sum(probs)
    n = len(expansion.labels)
    occupancy = torch.zeros(T, n, dtype=torch.float64)
    expected = {}
    for path, p in zip(paths, probs):
        for t, s in enumerate(path):
            occupancy[t, s] += p / z
        for s, pos in enumerate(expansion.token_pos):
            if pos >= 0:
                start = next(t for t, j in enumerate(path) if j >= s)  # a path may not skip a token
                end = next((t for t, j in enumerate(path) if j > s), T)
                a, b = expected.get(pos, (0.0, 0.0))
                expected[pos] = (a + p / z * start, b + p / z * end)
    return occupancy, expected


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_expected_boundaries_equal_enumeration_of_all_paths(kind, impl):
    topo, expand = _topology(kind, True)
    B, T = len(TRANSCRIPTS), max(LENGTHS)
    scores = torch.randn(B, T, C, generator=torch.Generator().manual_seed(3), dtype=torch.float64).log_softmax(-1)
    chain = chain_from_topology(topo, TRANSCRIPTS)
    lengths = torch.tensor(LENGTHS)
    occupancy = state_occupancy(scores, lengths, chain, impl)
    starts, ends = expected_position_frames(scores, lengths, chain, impl)
    for b, words in enumerate(TRANSCRIPTS):
        L = LENGTHS[b]
        want_occ, want = _brute_force(expand(words), scores[b, :L].tolist(), L)
        n = want_occ.shape[1]
        torch.testing.assert_close(occupancy[b, :L, :n].double(), want_occ, atol=1e-6, rtol=0)
        assert float(occupancy[b, L:].abs().sum()) == 0.0 and float(occupancy[b, :, n:].abs().sum()) == 0.0
        S = sum(len(w) for w in words)
        assert sorted(want) == list(range(S))
        for p in range(S):
            assert starts[b, p].item() == pytest.approx(want[p][0], abs=1e-6)
            assert ends[b, p].item() == pytest.approx(want[p][1], abs=1e-6)
        assert torch.isnan(starts[b, S:]).all() and torch.isnan(ends[b, S:]).all()


def test_an_utterance_without_a_path_gets_no_boundaries_and_spoils_no_other():
    topo, _ = _topology("ctc", True)
    transcripts = [[[1, 2, 3]], [[1, 1]]]
    chain = chain_from_topology(topo, transcripts)
    scores = torch.randn(2, 4, C, dtype=torch.float64).log_softmax(-1)
    starts, ends = expected_position_frames(scores, torch.tensor([4, 2]), chain)  # [[1, 1]] needs 3 frames
    assert torch.isnan(starts[1]).all() and torch.isnan(ends[1]).all()
    assert torch.isfinite(starts[0]).all() and (ends[0] > starts[0]).all() and float(ends[0, -1]) <= 4


def test_a_sharp_posterior_gives_the_viterbi_frames():
    topo, _ = _topology("hmm", True)
    # frames: silence, 1, 1, silence, 2 -- every other column far less likely
    labels = [0, 1, 1, 0, 2]
    scores = torch.full((1, 5, C), -60.0, dtype=torch.float64)
    scores[0, torch.arange(5), torch.tensor(labels)] = 0.0
    starts, ends = expected_position_frames(scores, torch.tensor([5]), chain_from_topology(topo, [[[1], [2]]]))
    assert starts[0].tolist() == pytest.approx([1.0, 4.0], abs=1e-9)
    assert ends[0].tolist() == pytest.approx([3.0, 5.0], abs=1e-9)
