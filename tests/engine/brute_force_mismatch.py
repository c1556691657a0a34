"""Brute-force reference for transcript-mismatch graphs, written from the definition alone (no FSA code).

The definition (fsalign.engine.mismatch): at every word boundary b (0 = before the first word,
N = after the last) a path may take the topology's own boundary state (CTC blank, HMM silence),
then a garbage state g_b (column ``garbage``, every frame costs ``garbage_penalty``, entering it costs
``entry_penalty`` and no transition score (from a state that may end the utterance), leaving it is like
starting an utterance: no transition score), then the boundary state again. From the start, or from the last state of an
aligned word u, a path may jump to the boundary of any word v with u < v <= u + 1 + max_skip,
skipping the words in between at ``skip_penalty`` each. Penalties are not scaled by α or γ.

Here the states of that definition are laid out by hand for CTC-like topologies (blank states,
optional token loops, equal neighbours need a blank unless relaxed or loop-free) and HMM-like
ones (``states_per_token`` states per token, optional silence); every path is enumerated.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple


def _lp(p):
    return (0.0, 0.0) if p is None else (math.log(p), math.log1p(-p))


@dataclass
class MismatchGraph:
    labels: List[int] = field(default_factory=list)
    kind: List[str] = field(default_factory=list)  # "token", "boundary", "garbage"
    position: List[int] = field(default_factory=list)  # transcript position of token states, else -1
    first_of: List[bool] = field(default_factory=list)  # the first state of its token
    loop: Dict[int, float] = field(default_factory=dict)  # state -> γ-scaled loop log-prob (absent: no loop)
    moves: Dict[Tuple[int, int], Tuple[float, float]] = field(default_factory=dict)  # -> (transition, penalty)
    initial: Dict[int, float] = field(default_factory=dict)  # state -> penalty
    finals: Dict[int, float] = field(default_factory=dict)  # state -> penalty
    garbage_cost: float = 0.0  # added for every garbage frame

    def add(self, label, kind, position=-1, first=False):
        self.labels.append(label)
        self.kind.append(kind)
        self.position.append(position)
        self.first_of.append(first)
        return len(self.labels) - 1

    def move(self, src, dst, transition=0.0, penalty=0.0):
        assert (src, dst) not in self.moves, (src, dst)
        self.moves[(src, dst)] = (transition, penalty)


def _build(words, garbage, boundary_label, boundary_lp, tok_fwd, garbage_penalty, skip_penalty, max_skip,
           token_states, token_to_token, entry_penalty=0.0):
    """Shared layout. ``token_states(g, w)`` adds word w's states and inner moves and returns its (first, last)
    state; ``token_to_token(u, v)`` says whether word u's last token may be followed directly by word v's first;
    ``tok_fwd`` scores a move out of a token state (into a boundary state or the next token)."""
    g = MismatchGraph()
    N = len(words)
    bl, bf = boundary_lp
    spans = [token_states(g, w) for w in range(N)]
    bound = []
    for b in range(N + 1):
        a, gar, c = g.add(boundary_label, "boundary"), g.add(garbage, "garbage"), g.add(boundary_label, "boundary")
        g.loop.update({a: bl, c: bl, gar: 0.0})
        bound.append((a, gar, c))
    P = -garbage_penalty

    def into(b, src, skipped, from_token_fwd, from_start):
        """Moves from ``src`` (None: the start) into boundary b's entry set."""
        pen = -skip_penalty * skipped
        a, gar, _ = bound[b]
        targets = [(a, from_token_fwd, 0.0), (gar, 0.0, -entry_penalty)]
        if b < N and (src is None or token_to_token(src, b)):
            targets.append((spans[b][0], from_token_fwd, 0.0))
        for dst, tr, extra in targets:
            if from_start:
                g.initial[dst] = pen + extra
            else:
                g.move(src_state(src), dst, tr, pen + extra)
        if b == N and not from_start:
            g.finals[src_state(src)] = pen

    def src_state(u):
        return spans[u][1]

    for b in range(N + 1):
        a, gar, c = bound[b]
        g.move(a, gar, 0.0, -entry_penalty)
        g.move(gar, c, 0.0, 0.0)
        if b < N:
            g.move(a, spans[b][0], bf, 0.0)
            g.move(gar, spans[b][0], 0.0, 0.0)
            g.move(c, spans[b][0], bf, 0.0)
        else:
            g.finals.update({a: 0.0, gar: 0.0, c: 0.0})
    for v in range(0, min(max_skip, N) + 1):
        into(v, None, v, 0.0, True)
    for u in range(N):
        for v in range(u + 1, min(u + 1 + max_skip, N) + 1):
            into(v, u, v - u - 1, tok_fwd, False)
    g.garbage_cost = P
    return g


def expand_hmm_mismatch(words, silence=0, label_loop=None, silence_loop=None, states_per_token=1,
                        column=lambda tok, j: tok, garbage=None, garbage_penalty=1.0, skip_penalty=2.0,
                        max_skip=8, gamma=1.0, entry_penalty=0.0):
    """HMM: silence optional at every word boundary, never inside a word."""
    tl, tf = (gamma * x for x in _lp(label_loop))
    sl, sf = (gamma * x for x in _lp(silence_loop))
    starts = [sum(len(w) for w in words[:i]) for i in range(len(words))]

    def token_states(g, w):
        prev = first = None
        for i, tok in enumerate(words[w]):
            for j in range(states_per_token):
                s = g.add(column(tok, j), "token", starts[w] + i, j == 0)
                g.loop[s] = tl
                if prev is None:
                    first = s
                else:
                    g.move(prev, s, tf)
                prev = s
        return first, prev

    return _build(words, garbage, silence, (sl, sf), tf, garbage_penalty, skip_penalty, max_skip, token_states,
                  lambda u, v: True, entry_penalty)


def expand_ctc_mismatch(words, blank=0, label_loop=None, blank_loop=None, relaxed=False, token_loops=True,
                        garbage=None, garbage_penalty=1.0, skip_penalty=2.0, max_skip=8, gamma=1.0,
                        entry_penalty=0.0):
    """CTC: blank optional around tokens, mandatory between equal neighbours (unless relaxed or loop-free)."""
    tl, tf = (gamma * x for x in _lp(label_loop))
    bl, bf = (gamma * x for x in _lp(blank_loop))
    starts = [sum(len(w) for w in words[:i]) for i in range(len(words))]

    def token_states(g, w):
        prev = first = None
        for i, tok in enumerate(words[w]):
            s = g.add(tok, "token", starts[w] + i, True)
            if token_loops:
                g.loop[s] = tl
            if prev is None:
                first = s
            else:
                blank_state = g.add(blank, "boundary")
                g.loop[blank_state] = bl
                g.move(prev, blank_state, tf)
                g.move(blank_state, s, bf)
                if relaxed or not token_loops or words[w][i - 1] != tok:
                    g.move(prev, s, tf)
            prev = s
        return first, prev

    def token_to_token(u, v):
        return relaxed or not token_loops or words[u][-1] != words[v][0]

    return _build(words, garbage, blank, (bl, bf), tf, garbage_penalty, skip_penalty, max_skip, token_states,
                  token_to_token, entry_penalty)


def all_paths(g: MismatchGraph, T: int):
    """Every state sequence of length T (DFS)."""
    out = []
    succ: Dict[int, list] = {}
    for (s, d) in g.moves:
        succ.setdefault(s, []).append(d)

    def rec(path):
        if len(path) == T:
            if path[-1] in g.finals:
                out.append(tuple(path))
            return
        s = path[-1]
        nxt = list(succ.get(s, []))
        if s in g.loop:
            nxt.append(s)
        for d in nxt:
            rec(path + [d])

    for s in g.initial:
        rec([s])
    return out


def path_score(g: MismatchGraph, path, scores):
    """Score of a path; ``scores`` (T, C+1) is the dense matrix (α and β already applied)."""
    total = g.initial[path[0]] + g.finals[path[-1]]
    for t, s in enumerate(path):
        total += float(scores[t][g.labels[s]])
        if g.kind[s] == "garbage":
            total += g.garbage_cost
        if t:
            p = path[t - 1]
            if p == s:
                total += g.loop[s]
            else:
                tr, pen = g.moves[(p, s)]
                total += tr + pen
    return total


def skipped_words(g: MismatchGraph, path, words) -> Tuple[int, ...]:
    """Indices of the words whose tokens the path never visits."""
    seen = {g.position[s] for s in path if g.kind[s] == "token"}
    starts = [sum(len(w) for w in words[:i]) for i in range(len(words))]
    return tuple(w for w in range(len(words)) if starts[w] not in seen)


def brute_force_mismatch(g: MismatchGraph, scores, T: int, words) -> Tuple[float, float, list]:
    """(log-sum-exp over paths, max over paths, [(labels, skipped words)] of the best paths)."""
    paths = all_paths(g, T)
    if not paths:
        return -math.inf, -math.inf, []
    values = [path_score(g, p, scores) for p in paths]
    m = max(values)
    lse = m + math.log(sum(math.exp(v - m) for v in values))
    best = [(tuple(g.labels[s] for s in p), skipped_words(g, p, words)) for p, v in zip(paths, values) if v > m - 1e-4]
    return lse, m, best


def num_paths(g: MismatchGraph, T: int) -> int:
    """How many paths of T frames (to check that the enumerator is not trivially small)."""
    return len(all_paths(g, T))
