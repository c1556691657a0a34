"""Two topologies composed in Python as k2 FSTs (README, "Custom topologies").

Conventions (see ``fsalign.Topology.from_fst``): labels are score-matrix
columns, aux_labels the token output on the arc entering a token's first
frame (0 = none), scores transition log-probs, state 0 the start state.
"""
import math

import k2

import fsalign


def _fst(arcs, num_states):
    """k2 FST from (src, dst, label, aux, score) tuples; ``num_states`` - 1 is final."""
    lines = [f"{s} {d} {lab} {aux} {score}" for s, d, lab, aux, score in sorted(arcs)]
    lines.append(str(num_states - 1))
    return k2.Fsa.from_str("\n".join(lines), acceptor=False)


def minimal_ctc(num_tokens: int, blank_loop: float = 0.5) -> fsalign.Topology:
    """CTC where every token occupies exactly one frame: no self-loop on token states.

    Columns: 0 blank, 1..num_tokens tokens. Equal neighbours need no blank
    (without loops "a a" cannot be read as one token).
    """
    loop, fwd = math.log(blank_loop), math.log1p(-blank_loop)
    tok = lambda k: 1 + k  # noqa: E731  state of token k (k = 1..num_tokens)
    final = num_tokens + 2
    arcs = [(0, 1, 0, 0, 0.0), (1, 1, 0, 0, loop), (1, final, -1, -1, 0.0)]
    for k in range(1, num_tokens + 1):
        arcs += [(0, tok(k), k, k, 0.0), (1, tok(k), k, k, fwd), (tok(k), 1, 0, 0, 0.0),
                 (tok(k), final, -1, -1, 0.0)]
        arcs += [(tok(k), tok(j), j, j, 0.0) for j in range(1, num_tokens + 1)]
    return fsalign.Topology.from_fst(_fst(arcs, final + 1), num_tokens + 1, name="minimal CTC")


def three_state_hmm(num_tokens: int, label_loop: float = 0.5, silence_loop: float = 0.9) -> fsalign.Topology:
    """HMM with three states per token in sequence, each with a self-loop.

    Columns: 0 silence; state j (0, 1, 2) of token k (1..num_tokens) is column
    ``1 + 3 (k - 1) + j``. Transcripts use token ids 1..num_tokens. Silence is
    optional at word boundaries (output symbol ``num_tokens + 1``).
    """
    lp, lf = math.log(label_loop), math.log1p(-label_loop)
    sp, sf = math.log(silence_loop), math.log1p(-silence_loop)
    sil_sym = num_tokens + 1
    col = lambda k, j: 1 + 3 * (k - 1) + j  # noqa: E731
    st = lambda k, j: 2 + 3 * (k - 1) + j  # noqa: E731
    final = 2 + 3 * num_tokens
    arcs = [(0, 1, 0, sil_sym, 0.0), (1, 1, 0, 0, sp), (1, final, -1, -1, 0.0)]
    for k in range(1, num_tokens + 1):
        arcs += [(0, st(k, 0), col(k, 0), k, 0.0), (1, st(k, 0), col(k, 0), k, sf)]
        arcs += [(st(k, j), st(k, j), col(k, j), 0, lp) for j in range(3)]
        arcs += [(st(k, 0), st(k, 1), col(k, 1), 0, lf), (st(k, 1), st(k, 2), col(k, 2), 0, lf)]
        arcs += [(st(k, 2), st(m, 0), col(m, 0), m, lf) for m in range(1, num_tokens + 1)]
        arcs += [(st(k, 2), 1, 0, sil_sym, lf), (st(k, 2), final, -1, -1, 0.0)]
    return fsalign.Topology.from_fst(
        _fst(arcs, final + 1), 3 * num_tokens + 1, silence_symbol=sil_sym, name="3-state HMM"
    )
