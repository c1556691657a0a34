"""Topologies: from_fst input checks, valid tokens, TrainingGraphs indexing, loop scores, make_topology, and
the built-in chain graphs against hand-written arc lists and hand-counted minimum frames."""
import math

import k2
import pytest
import torch

import fsalign
from fsalign.engine.builtin import CtcTopology, HmmTopology, RelaxedTopology, make_topology
from fsalign.engine.graphs import min_frames_of
from fsalign.engine.topology import Topology, TrainingGraphs, loop_scores
from fsalign.errors import FsalignError

# A CTC topology over columns (0 = blank, 1, 2) written by hand in k2's text format (src dst label aux score):
# state 1 is blank, 2 and 3 the tokens 1 and 2 (k2's convention: output = token, 0 = none).
CUSTOM_CTC = """0 1 0 0 0.0
0 2 1 1 0.0
0 3 2 2 0.0
1 1 0 0 0.0
1 2 1 1 0.0
1 3 2 2 0.0
1 4 -1 -1 0.0
2 1 0 0 0.0
2 2 1 0 0.0
2 3 2 2 0.0
2 4 -1 -1 0.0
3 1 0 0 0.0
3 2 1 1 0.0
3 3 2 0 0.0
3 4 -1 -1 0.0
4"""


def _custom_fst(text=CUSTOM_CTC):
    return k2.Fsa.from_str(text, acceptor=False)


def _arcs(fsa):
    """The arcs of a single Fsa as a set of (src, dst, label, aux)."""
    values = fsa.arcs.values()[:, :3].tolist()
    aux = fsa.aux_labels.tolist()
    return {(s, d, lab, a) for (s, d, lab), a in zip(values, aux)}


def _scored_arcs(fsa):
    """{(src, dst): score} of a single Fsa."""
    values = fsa.arcs.values()[:, :2].tolist()
    return {(s, d): float(x) for (s, d), x in zip(values, fsa.scores.tolist())}


def _same_fsa(a, b):
    """Two single Fsas with identical arcs (src, dst, label, score) and aux labels, in the same order."""
    assert torch.equal(a.arcs.values()[:, :3], b.arcs.values()[:, :3])
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.aux_labels, b.aux_labels)
    assert k2.to_str_simple(a) == k2.to_str_simple(b)


# ---------------------------------------------------------------------------------------------- from_fst


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: torch.zeros(4, 4, dtype=torch.int32), "from_fst expects a single k2.Fsa"),
        (lambda: k2.create_fsa_vec([_custom_fst()]), "got an FsaVec"),
        (lambda: k2.Fsa.from_str("0 1 1 0.0\n1 2 -1 0.0\n2"), "needs tensor aux_labels"),
    ],
)
def test_from_fst_refuses_what_is_not_a_single_transducer(make, message):
    with pytest.raises(FsalignError) as err:
        Topology.from_fst(make())
    assert message in str(err.value)


def test_from_fst_refuses_ragged_aux_labels():
    fst = k2.Fsa.from_str("0 1 1 0.0\n1 2 -1 0.0\n2")
    fst.aux_labels = k2.RaggedTensor([[1, 2], [-1]])
    with pytest.raises(FsalignError, match="needs tensor aux_labels"):
        Topology.from_fst(fst)


def test_from_fst_refuses_a_label_outside_num_labels():
    with pytest.raises(FsalignError) as err:
        Topology.from_fst(_custom_fst(), num_labels=2)
    assert str(err.value) == "the FST uses label 2, but num_labels is 2"
    with pytest.raises(FsalignError, match="non-token column 3 outside 0..2"):
        Topology.from_fst(_custom_fst(), non_token_labels=(3,))


def test_from_fst_defaults_and_arc_sorts_a_copy_on_cpu():
    topo = Topology.from_fst(_custom_fst(), name="my ctc")
    assert topo.num_labels == 3  # largest label + 1
    assert topo.non_token_labels == (0,) and topo.silence_symbol is None and topo.token_offset == 0
    assert repr(topo) == "Topology(name='my ctc', num_labels=3)"
    assert topo.fst.device == torch.device("cpu")
    assert _arcs(topo.fst) == _arcs(_custom_fst())
    assert Topology.from_fst(_custom_fst(), num_labels=5).num_labels == 5


def test_valid_tokens_of_a_custom_fst():
    assert Topology.from_fst(_custom_fst()).valid_tokens == [False, True, True]
    # outputs 2 and 4 with token offset 1 are tokens 1 and 3; output 1 is the silence symbol, not a token
    text = "0 1 0 1 0.0\n0 2 1 2 0.0\n0 3 2 4 0.0\n1 4 -1 -1 0.0\n2 4 -1 -1 0.0\n3 4 -1 -1 0.0\n4"
    topo = Topology.from_fst(_custom_fst(text), num_labels=4, silence_symbol=1, token_offset=1)
    assert topo.valid_tokens == [False, True, False, True]
    # a token id beyond the columns (outputs need not be columns) widens the table
    text = "0 1 0 0 0.0\n0 2 1 7 0.0\n1 3 -1 -1 0.0\n2 3 -1 -1 0.0\n3"
    topo = Topology.from_fst(_custom_fst(text))
    assert topo.valid_tokens == [False] * 7 + [True]
    assert len(topo.compile([[[7]]])) == 1
    with pytest.raises(FsalignError, match="utterance 0, word 0: token id 1 is not a token of custom"):
        topo.compile([[[1]]])


def test_custom_fst_compiles_to_the_ctc_chain():
    """Composing the hand-written CTC FST with a transcript gives the chain CtcTopology builds."""
    custom = Topology.from_fst(_custom_fst()).compile([[[1, 2]], [[2, 2]]])
    builtin = CtcTopology(3).compile([[[1, 2]], [[2, 2]]])
    for b in range(2):
        # same states and moves; the built-in outputs token + 1, the custom FST the token itself
        shifted = {(s, d, lab, a - 1 if a > 0 else a) for s, d, lab, a in _arcs(builtin.fsa[b])}
        assert _arcs(custom.fsa[b]) == shifted
    assert custom.min_frames.tolist() == [2, 3]


# ---------------------------------------------------------------------------------------------- TrainingGraphs

TRANSCRIPTS = [[[1, 2], [3]], [[2]], [[3, 3], [1]]]


@pytest.mark.parametrize("topo", [CtcTopology(4), HmmTopology(4)], ids=["ctc", "hmm"])
@pytest.mark.parametrize(
    "index, rows",
    [(1, [1]), (-1, [2]), (slice(1, None), [1, 2]), (slice(None, None, 2), [0, 2]), (torch.tensor([2, 0]), [2, 0]),
     ([1, 1], [1, 1])],
    ids=["int", "negative", "slice", "step", "tensor", "list"],
)
def test_training_graphs_indexing_selects_utterances(topo, index, rows):
    graphs = topo.compile(TRANSCRIPTS)
    part = graphs[index]
    assert isinstance(part, TrainingGraphs) and part.topology is topo
    assert len(part) == len(rows) == part.fsa.shape[0]
    assert part.transcripts == [TRANSCRIPTS[r] for r in rows]
    assert part.min_frames.tolist() == [int(graphs.min_frames[r]) for r in rows]
    reference = k2.index_fsa(graphs.fsa, torch.tensor(rows, dtype=torch.int32))
    for k, r in enumerate(rows):
        _same_fsa(part.fsa[k], reference[k])
        _same_fsa(part.fsa[k], topo.compile([TRANSCRIPTS[r]]).fsa[0])  # the utterance compiled alone


def test_training_graphs_to_cpu_is_a_no_op():
    graphs = CtcTopology(4).compile(TRANSCRIPTS)
    assert graphs.device == torch.device("cpu")
    assert graphs.to("cpu") is graphs
    assert graphs.to(torch.device("cpu")) is graphs


def test_empty_transcript_graph_is_a_single_blank_state():
    graphs = CtcTopology(3).compile([[]])
    assert _arcs(graphs.fsa[0]) == {(0, 1, 0, 0), (1, 1, 0, 0), (1, 2, -1, -1)}
    assert graphs.min_frames.tolist() == [1]


# ---------------------------------------------------------------------------------------------- loop scores


@pytest.mark.parametrize("loop", [0, 1, 1.5, -0.25])
def test_loop_scores_refuse_what_is_not_a_probability(loop):
    with pytest.raises(FsalignError) as err:
        loop_scores(loop, "label_loop")
    assert str(err.value) == f"label_loop must be a probability in (0, 1) or None, got {float(loop)}"


def test_loop_scores_values():
    assert loop_scores(None, "x") == (0.0, 0.0)
    loop, forward = loop_scores(0.25, "x")
    assert loop == pytest.approx(math.log(0.25)) and forward == pytest.approx(math.log(0.75))
    with pytest.raises(FsalignError, match="silence_loop must be a probability"):
        HmmTopology(4, silence_loop=1.0)
    with pytest.raises(FsalignError, match="blank_loop must be a probability"):
        CtcTopology(4, blank_loop=0.0)


# ---------------------------------------------------------------------------------------------- make_topology


def test_make_topology_by_name():
    ctc = make_topology("ctc", 5, label_loop=0.5)
    assert type(ctc) is CtcTopology and ctc.num_labels == 5 and ctc.blank == 0 and ctc.label_loop == 0.5
    relaxed = make_topology("relaxed", 6)
    assert type(relaxed) is RelaxedTopology and relaxed.num_labels == 6 and relaxed.relaxed
    hmm = make_topology("hmm", 7, label_loop=0.3, silence_loop=0.9)
    assert type(hmm) is HmmTopology and hmm.num_labels == 7
    assert (hmm.silence, hmm.label_loop, hmm.silence_loop, hmm.silence_symbol) == (0, 0.3, 0.9, 1)
    assert sorted(fsalign.engine.TOPOLOGIES) == ["ctc", "hmm", "relaxed"]


def test_make_topology_unknown_name():
    with pytest.raises(ValueError) as err:
        make_topology("CTC", 5)
    assert "topology must be one of ('ctc', 'hmm', 'relaxed'), got 'CTC'" in str(err.value)


# ---------------------------------------------------------------------------------------------- built-in chains
# k2 states: 0 start, 1..n the emitting states in order, n + 1 final; aux = token + 1 on entering a token.


def _ctc_11_arcs():
    # emitting states 1..5: ε 1 ε 1 ε
    return {
        (0, 1, 0, 0), (0, 2, 1, 2),                                              # first frame: ε or 1
        (1, 1, 0, 0), (2, 2, 1, 0), (3, 3, 0, 0), (4, 4, 1, 0), (5, 5, 0, 0),    # loops
        (1, 2, 1, 2), (2, 3, 0, 0), (3, 4, 1, 2), (4, 5, 0, 0),                  # chain
        (5, 6, -1, -1), (4, 6, -1, -1),                                          # finals: last ε or last 1
    }  # fmt: skip


def test_ctc_chain_of_a_repeat_needs_the_blank():
    graph = CtcTopology(3).compile([[[1, 1]]]).fsa[0]
    assert _arcs(graph) == _ctc_11_arcs()
    assert (2, 4, 1, 2) not in _arcs(graph)  # no direct move from the first 1 to the second
    emitting = sorted({(d, lab) for _, d, lab, _ in _arcs(graph) if lab >= 0})
    assert [lab for _, lab in emitting] == [0, 1, 0, 1, 0]


def test_relaxed_chain_of_a_repeat_has_the_direct_move():
    graph = RelaxedTopology(3).compile([[[1, 1]]]).fsa[0]
    assert _arcs(graph) == _ctc_11_arcs() | {(2, 4, 1, 2)}


def test_ctc_chain_skips_blank_between_different_tokens():
    graph = CtcTopology(4).compile([[[1], [2, 2]]]).fsa[0]  # word boundaries mean nothing to CTC
    skips = {(s, d) for s, d, lab, _ in _arcs(graph) if s > 0 and d == s + 2 and lab >= 0}
    assert skips == {(2, 4)}  # 1 -> 2, but not 2 -> 2


def test_hmm_chain_has_silence_only_at_word_boundaries():
    graph = HmmTopology(4, label_loop=None, silence_loop=None).compile([[[1, 2], [3]]]).fsa[0]
    # S + W + 1 = 6 emitting states: sil 1 2 sil 3 sil (k2 states 1..6); silence symbol 1, token k outputs k + 1
    expected = {
        (0, 1, 0, 1), (0, 2, 1, 2),                                                          # sil or 1 first
        (1, 1, 0, 0), (2, 2, 1, 0), (3, 3, 2, 0), (4, 4, 0, 0), (5, 5, 3, 0), (6, 6, 0, 0),  # loops
        (1, 2, 1, 2), (2, 3, 2, 3),                                                          # word 1
        (3, 4, 0, 1), (4, 5, 3, 4), (3, 5, 3, 4),                                            # boundary
        (5, 6, 0, 1),                                                                        # final silence
        (6, 7, -1, -1), (5, 7, -1, -1),
    }  # fmt: skip
    assert _arcs(graph) == expected
    emitting = sorted({(d, lab) for _, d, lab, _ in _arcs(graph) if lab >= 0})
    assert [lab for _, lab in emitting] == [0, 1, 2, 0, 3, 0]
    # nothing enters a silence state from inside a word
    into_silence = {s for s, d, lab, _ in _arcs(graph) if lab == 0 and s != d}
    assert into_silence == {0, 3, 5}


def test_builtin_transition_scores_by_hand():
    hmm = HmmTopology(3, label_loop=0.5, silence_loop=0.9).compile([[[1], [2]]]).fsa[0]
    # emitting states: sil(1) 1(2) sil(3) 2(4) sil(5); final 6
    lq, lf = math.log(0.5), math.log(0.5)
    sq, sf = math.log(0.9), math.log(0.1)
    expected = {
        (0, 1): 0.0, (0, 2): 0.0,
        (1, 1): sq, (2, 2): lq, (3, 3): sq, (4, 4): lq, (5, 5): sq,
        (1, 2): sf, (2, 3): lf, (2, 4): lf, (3, 4): sf, (4, 5): lf,
        (5, 6): 0.0, (4, 6): 0.0,
    }  # fmt: skip
    got = _scored_arcs(hmm)
    assert got.keys() == expected.keys()
    for arc, score in expected.items():
        assert got[arc] == pytest.approx(score, abs=1e-6), arc
    ctc = CtcTopology(3, label_loop=0.25, blank_loop=None).compile([[[1]]]).fsa[0]
    # ε(1) 1(2) ε(3): token moves score log 0.75, blank moves 0
    got = _scored_arcs(ctc)
    assert got[(2, 2)] == pytest.approx(math.log(0.25)) and got[(2, 3)] == pytest.approx(math.log(0.75))
    assert got[(1, 1)] == 0.0 and got[(1, 2)] == 0.0 and got[(0, 2)] == 0.0 and got[(2, 4)] == 0.0


@pytest.mark.parametrize(
    "transcript, ctc, relaxed, hmm",
    [
        ([[1, 1]], 3, 2, 2),
        ([[1], [1]], 3, 2, 2),           # a repeat across a word boundary still needs a CTC blank
        ([[1, 2, 2, 2]], 6, 4, 4),
        ([[1, 2], [3]], 3, 3, 3),
        ([[2, 2], [2]], 5, 3, 3),
        ([], 1, 1, 1),                   # an empty transcript still takes one frame of blank/silence
    ],
)
def test_min_frames_by_hand(transcript, ctc, relaxed, hmm):
    for topo, expected in ((CtcTopology(4), ctc), (RelaxedTopology(4), relaxed), (HmmTopology(4), hmm)):
        graphs = topo.compile([transcript])
        assert graphs.min_frames.tolist() == [expected], topo
        assert graphs.min_frames.dtype == torch.int64
        # the shortest path of the graph itself agrees
        assert min_frames_of(graphs.fsa).tolist() == [expected], topo
