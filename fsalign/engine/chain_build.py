"""The chains of a batch: the state sequences the kernels of :mod:`fsalign.engine.chain` run on.

Dimension symbols used in this module:
  B: utterances in a batch
  N: states of the longest chain

See :mod:`fsalign.engine.chain` for what a chain is and which moves it allows.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from fsalign.engine.builtin import CtcTopology, HmmTopology
from fsalign.engine.graphs import validate_transcripts
from fsalign.errors import FsalignError

__all__ = ["Chain", "chain_from_topology"]

_NEVER = 2**62  # first_frame / min_rest of padding states


@dataclass
class Chain:
    """The chains of a batch, padded to N states.

    Attributes:
      labels: LongTensor (B, N), the column each state emits (padding repeats state 0's).
      loop: float64 Tensor (B, N), score of staying in a state (γ·log loop probability).
      fwd: float64 Tensor (B, N), score of any other move out of a state (γ·log(1 - loop)).
      skip: BoolTensor (B, N), j -> j+2 allowed (never for j >= n - 2).
      num_states: LongTensor (B,), n of every chain (>= 1).
      positions: LongTensor (B, N), transcript token position of each state, -1 for
        blank/silence and padding.
      first_frame: LongTensor (B, N), the earliest frame of any path in state j.
      min_rest: LongTensor (B, N), the fewest frames from state j (its own included) to the
        end of a path. A state is on some path of an L-frame utterance at frame t exactly when
        ``first_frame[j] <= t`` and ``min_rest[j] <= L - t``: the kernels compute that band only.
      min_frames: LongTensor (B,), the fewest frames of any path.
    """

    labels: torch.Tensor
    loop: torch.Tensor
    fwd: torch.Tensor
    skip: torch.Tensor
    num_states: torch.Tensor
    positions: torch.Tensor
    first_frame: torch.Tensor
    min_rest: torch.Tensor
    min_frames: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "Chain":
        """Returns the chain with every tensor on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.labels.device == device:
            return self
        return Chain(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))


def chain_from_topology(topology, transcripts, transition_scale: float = 1.0, device="cpu",
                        validate: bool = True) -> Chain:
    """Chains of a batch of transcripts under a built-in topology.

    Args:
      topology: a :class:`~fsalign.CtcTopology`, :class:`~fsalign.RelaxedTopology` or
        :class:`~fsalign.HmmTopology`.
      transcripts: ``list[list[list[int]]]``, utterance -> words -> token ids.
      transition_scale: γ, multiplies the loop/forward log-probs.
      device: where the tensors go.
      validate: check the transcripts (False: they come from ``topology.compile``, already checked).

    Returns:
      Chain with B = len(transcripts) chains.

    Raises:
      FsalignError: another topology, or a malformed transcript (named by utterance and word).
    """
    if not isinstance(topology, (CtcTopology, HmmTopology)):
        raise FsalignError(f"chain kernels need a CTC, relaxed or HMM topology, got {topology!r}")
    if validate:
        transcripts = validate_transcripts(transcripts, topology.valid_tokens, topology.name)
    gamma = float(transition_scale)
    hmm = isinstance(topology, HmmTopology)
    token_q = topology.label_loop
    other_q = topology.silence_loop if hmm else topology.blank_loop
    other = topology.silence if hmm else topology.blank

    def scores(q):
        return (0.0, 0.0) if q is None else (gamma * math.log(q), gamma * math.log1p(-q))

    (tl, tf), (ol, of) = scores(token_q), scores(other_q)
    rows = []
    for words in transcripts:
        a = np.asarray([t for w in words for t in w], dtype=np.int64)
        S = len(a)
        if hmm:
            sizes = np.asarray([len(w) for w in words], dtype=np.int64)
            sil = np.arange(len(words) + 1) + np.concatenate([[0], np.cumsum(sizes)])
            is_tok = np.ones(S + len(words) + 1, bool)
            is_tok[sil] = False
            skip = np.zeros(len(is_tok), bool)
            skip[sil[1:-1] - 1] = True  # last token of a word -> first of the next
        else:
            is_tok = np.arange(2 * S + 1) % 2 == 1
            skip = np.zeros(len(is_tok), bool)
            skip[1:2 * S - 2:2] = True if topology.relaxed else a[1:] != a[:-1]
        n = len(is_tok)
        lab = np.full(n, other, np.int64)
        lab[is_tok] = a
        pos = np.full(n, -1, np.int64)
        pos[is_tok] = np.arange(S)
        # a path may leave out the first and the last state and every state it can skip, no two
        # of them adjacent: the states before j it must visit give j's earliest frame
        must = np.ones(n, bool)
        must[1:-1] = ~skip[:-2]
        must[[0, -1]] = n == 1
        before = np.cumsum(must) - must
        rows.append((lab, np.where(is_tok, tl, ol), np.where(is_tok, tf, of), skip, pos,
                     before, 1 + int(must.sum()) - before - must))
    B = len(rows)
    N = max([len(r[0]) for r in rows], default=1)
    labels = np.zeros((B, N), np.int64)
    loop, fwd = np.zeros((B, N)), np.zeros((B, N))
    skip = np.zeros((B, N), bool)
    positions = np.full((B, N), -1, np.int64)
    first, rest = np.full((B, N), _NEVER, np.int64), np.full((B, N), _NEVER, np.int64)
    for b, (lab, lp, fw, sk, pos, fi, re) in enumerate(rows):
        n = len(lab)
        labels[b, :n], labels[b, n:] = lab, lab[0]
        loop[b, :n], fwd[b, :n], skip[b, :n], positions[b, :n] = lp, fw, sk, pos
        first[b, :n], rest[b, :n] = fi, re
    nstates = torch.tensor([len(r[0]) for r in rows], dtype=torch.int64)
    need = torch.from_numpy(first[np.arange(B), (nstates - 2).clamp(min=0).numpy()]) + 1  # the earlier final
    return Chain(*(torch.from_numpy(x) for x in (labels, loop, fwd, skip)), nstates,
                 torch.from_numpy(positions), *(torch.from_numpy(x) for x in (first, rest)), need).to(device)
