"""Graph building blocks: transcript validation, FsaVec construction, shortest paths, transition scaling."""
import k2
import numpy as np
import pytest
import torch

from fsalign.engine.graphs import fsa_vec_from_arrays, min_frames_of, scale_transitions, validate_transcripts
from fsalign.errors import FsalignError

TOKENS = [False, True, True, True]  # ids 1..3 are tokens, 0 is blank


@pytest.mark.parametrize(
    "transcripts, message",
    [
        (5, "transcripts must be a list (utterances) of lists (words) of lists of token ids, got int"),
        ("abc", "got str"),
        ([[[1]], 7], "utterance 1: expected a list of words (each a list of token ids), got 7"),
        ([[[1]], [[2], 3]], "utterance 1, word 1: expected a list of token ids, got 3"),
        ([[[1], [2]], [[3], []]], "utterance 1, word 1: a word needs at least one token"),
        ([[[1, 2.0]]], "utterance 0, word 0: token 2.0 is not an int"),
        ([[[1]], [[2], ["3"]]], "utterance 1, word 1: token '3' is not an int"),
        ([[[1], [True]]], "utterance 0, word 1: token True is not an int"),
        ([[[1]], [[1], [2, 4]]], "utterance 1, word 1: token id 4 is not a token of my topology (valid: 1..3)"),
        ([[[0]]], "utterance 0, word 0: token id 0 is not a token"),
        ([[[-1]]], "utterance 0, word 0: token id -1 is not a token"),
    ],
)
def test_validate_transcripts_names_utterance_and_word(transcripts, message):
    with pytest.raises(FsalignError) as err:
        validate_transcripts(transcripts, TOKENS, "my topology")
    assert message in str(err.value)


def test_validate_transcripts_describes_gaps_in_the_valid_ids():
    with pytest.raises(FsalignError) as err:
        validate_transcripts([[[5]]], [False, True, False, True, True], "x")
    assert "(valid: 1..4 except 2)" in str(err.value)
    with pytest.raises(FsalignError, match=r"\(valid: none\)"):
        validate_transcripts([[[0]]], [False], "x")


def test_validate_transcripts_returns_plain_python_lists():
    out = validate_transcripts([((np.int64(1), 2),), [], [[3], (np.int32(1),)]], TOKENS, "x")
    assert out == [[[1, 2]], [], [[3], [1]]]
    assert all(type(t) is int for u in out for w in u for t in w)
    assert all(type(w) is list for u in out for w in u)


def _arrays(src, dst, label, score, aux):
    return (np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(label, np.int64),
            np.asarray(score, np.float32), None if aux is None else np.asarray(aux, np.int64))


UTT_A = ([0, 0, 1, 1, 2], [1, 2, 1, 2, 3], [1, 2, 1, 2, -1], [0.0, -0.5, -1.25, 0.75, 0.0], [2, 3, 0, 3, -1])
UTT_B = ([0, 1, 1], [1, 1, 2], [3, 3, -1], [-2.5, 0.125, 0.0], [4, 0, -1])


def test_fsa_vec_from_arrays_round_trips_every_arc():
    vec = fsa_vec_from_arrays([_arrays(*UTT_A), _arrays(*UTT_B)], "cpu")
    assert vec.shape[0] == 2 and vec.device == torch.device("cpu")
    for b, (src, dst, label, score, aux) in enumerate((UTT_A, UTT_B)):
        fsa = vec[b]
        values = fsa.arcs.values()
        assert values[:, 0].tolist() == src
        assert values[:, 1].tolist() == dst
        assert values[:, 2].tolist() == label
        assert fsa.scores.tolist() == score  # exactly representable in float32
        assert fsa.aux_labels.tolist() == aux
        assert fsa.aux_labels.dtype == torch.int32
    # the same through k2's own text format
    expected = "\n".join(f"{s} {d} {lab} {a} {x:g}" for s, d, lab, x, a in zip(*UTT_B)) + "\n2"
    assert k2.to_str_simple(vec[1]).strip() == k2.to_str_simple(k2.Fsa.from_str(expected, acceptor=False)).strip()


def test_fsa_vec_from_arrays_without_aux_is_an_acceptor():
    vec = fsa_vec_from_arrays([_arrays(*UTT_A[:4], None), _arrays(*UTT_B[:4], None)], "cpu")
    assert not hasattr(vec, "aux_labels")
    assert vec[0].arcs.values()[:, 2].tolist() == UTT_A[2]


# states 0..4, final 4: 0 -ε-> 1, loops everywhere, 1 -> 2 -> 3 and a skip 1 -> 3 (shortest: 0->1->3->4, 2 frames)
WITH_SKIP = """0 1 0 0 0.0
1 1 0 0 -3.0
1 2 1 2 -0.5
1 3 2 3 -9.0
2 2 1 0 0.0
2 3 2 3 0.0
3 3 2 0 -1.0
3 4 -1 -1 0.0
4"""
# the same without the skip: 0->1->2->3->4, 3 frames
NO_SKIP = """0 1 0 0 0.0
1 1 0 0 0.0
1 2 1 2 0.0
2 2 1 0 0.0
2 3 2 3 0.0
3 3 2 0 0.0
3 4 -1 -1 0.0
4"""
# state 2 is unreachable, so nothing reaches the final state 3
NO_PATH = """0 1 1 2 0.0
1 1 1 0 0.0
2 3 -1 -1 0.0
3"""


def test_min_frames_of_counts_frames_of_the_shortest_path():
    fsas = [k2.Fsa.from_str(s, acceptor=False) for s in (WITH_SKIP, NO_SKIP, NO_PATH)]
    vec = k2.create_fsa_vec(fsas)
    before = (vec.arcs.values().clone(), vec.scores.clone(), vec.aux_labels.clone())
    out = min_frames_of(vec)
    assert out.tolist() == [2, 3, -1]
    assert out.dtype == torch.int64 and out.device == torch.device("cpu")
    # the input graphs are untouched
    assert torch.equal(vec.arcs.values(), before[0])
    assert torch.equal(vec.scores, before[1]) and torch.equal(vec.aux_labels, before[2])


def test_min_frames_of_a_single_emitting_state():
    vec = k2.create_fsa_vec([k2.Fsa.from_str("0 1 0 0 0.0\n1 1 0 0 0.0\n1 2 -1 -1 0.0\n2", acceptor=False)])
    assert min_frames_of(vec).tolist() == [1]


def test_scale_transitions_is_a_no_op_for_one_and_a_copy_otherwise():
    fsa = k2.create_fsa_vec([k2.Fsa.from_str(WITH_SKIP, acceptor=False)])
    original = fsa.scores.clone()
    assert scale_transitions(fsa, 1.0) is fsa
    for gamma in (0.5, 0.0, -2.0):
        scaled = scale_transitions(fsa, gamma)
        assert scaled is not fsa
        assert scaled.scores.tolist() == [gamma * x for x in original.tolist()]
        assert torch.equal(scaled.arcs.values()[:, :3], fsa.arcs.values()[:, :3])
        assert torch.equal(scaled.aux_labels, fsa.aux_labels)
        assert torch.equal(fsa.scores, original)  # the original keeps its scores
