"""Brute-force reference: enumerate every state path of a topology, written from
DESIGN.md's definitions alone (no FSA code), for tiny inputs.

A topology is expanded per utterance into a sequence of states; each state has
an emitted column, a loop log-prob (None: no self-loop) and a forward log-prob
(score of any other move out of it). A path is a state index per frame.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class Expansion:
    labels: List[int] = field(default_factory=list)
    loop: List[Optional[float]] = field(default_factory=list)  # None: no self-loop
    fwd: List[float] = field(default_factory=list)
    token_pos: List[int] = field(default_factory=list)  # transcript position or -1
    moves: set = field(default_factory=set)
    initial: set = field(default_factory=set)
    finals: set = field(default_factory=set)

    def add(self, label, loop, fwd, pos=-1):
        self.labels.append(label)
        self.loop.append(loop)
        self.fwd.append(fwd)
        self.token_pos.append(pos)
        return len(self.labels) - 1


def _lp(p):
    return (0.0, 0.0) if p is None else (math.log(p), math.log1p(-p))


def expand_ctc(words, blank=0, label_loop=None, blank_loop=None, relaxed=False, token_loops=True):
    a = [t for w in words for t in w]
    (tl, tf), (bl, bf) = _lp(label_loop), _lp(blank_loop)
    e = Expansion()
    blanks = [e.add(blank, bl, bf)]
    toks = []
    for i, tok in enumerate(a):
        toks.append(e.add(tok, tl if token_loops else None, tf, i))
        blanks.append(e.add(blank, bl, bf))
    for i in range(len(a)):
        e.moves |= {(blanks[i], toks[i]), (toks[i], blanks[i + 1])}
        if i + 1 < len(a) and (relaxed or a[i] != a[i + 1] or not token_loops):
            e.moves.add((toks[i], toks[i + 1]))
    e.initial = {blanks[0]} | ({toks[0]} if a else set())
    e.finals = {blanks[-1]} | ({toks[-1]} if a else set())
    return e


def expand_hmm(words, silence=0, label_loop=None, silence_loop=None, states_per_token=1,
               column=lambda tok, j: tok):
    (tl, tf), (sl, sf) = _lp(label_loop), _lp(silence_loop)
    e = Expansion()
    sils = [e.add(silence, sl, sf)]
    firsts, lasts = [], []
    pos = 0
    for w in words:
        prev = None
        for tok in w:
            for j in range(states_per_token):
                s = e.add(column(tok, j), tl, tf, pos)
                if prev is None:
                    firsts.append(s)
                else:
                    e.moves.add((prev, s))
                prev = s
            pos += 1
        lasts.append(prev)
        sils.append(e.add(silence, sl, sf))
    for b in range(len(words)):
        e.moves |= {(sils[b], firsts[b]), (lasts[b], sils[b + 1])}
        if b + 1 < len(words):
            e.moves.add((lasts[b], firsts[b + 1]))
    e.initial = {sils[0]} | ({firsts[0]} if words else set())
    e.finals = {sils[-1]} | ({lasts[-1]} if words else set())
    return e


def all_paths(e: Expansion, T: int):
    """Every state sequence of length T (DFS)."""
    out = []

    def rec(path):
        if len(path) == T:
            if path[-1] in e.finals:
                out.append(tuple(path))
            return
        s = path[-1]
        nxt = [d for (f, d) in e.moves if f == s]
        if e.loop[s] is not None:
            nxt.append(s)
        for d in nxt:
            rec(path + [d])

    for s in e.initial:
        rec([s])
    return out


def path_score(e, path, log_probs, alpha, beta, log_prior, gamma):
    """DESIGN.md's path score. log_probs (T, C) and log_prior (C,) as nested lists / arrays."""
    score = 0.0
    for t, s in enumerate(path):
        lab = e.labels[s]
        score += alpha * float(log_probs[t][lab])
        if log_prior is not None:
            score -= beta * float(log_prior[lab])
        if t > 0:
            prev = path[t - 1]
            score += gamma * (e.loop[prev] if prev == s else e.fwd[prev])
    return score


def brute_force(e, log_probs, T, alpha=1.0, beta=0.0, log_prior=None, gamma=1.0) -> Tuple[float, float, list]:
    """(log-sum-exp over paths, max over paths, argmax paths as label sequences)."""
    paths = all_paths(e, T)
    if not paths:
        return -math.inf, -math.inf, []
    scores = [path_score(e, p, log_probs, alpha, beta, log_prior, gamma) for p in paths]
    m = max(scores)
    lse = m + math.log(sum(math.exp(s - m) for s in scores))
    best = [tuple(e.labels[s] for s in p) for p, sc in zip(paths, scores) if sc > m - 1e-4]
    return lse, m, best
