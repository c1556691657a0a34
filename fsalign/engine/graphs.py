"""Building blocks of training graphs: transcript checks, FsaVec construction, shortest paths.

Dimension symbols used in this module:
  B: utterances in a batch
  S: tokens in one transcript
  N: arcs

A transcript is ``list[list[int]]``: words -> token ids (score-matrix columns
other than blank/silence). A batch of transcripts is ``list[list[list[int]]]``.

Conventions of every graph (built here or composed from a user FST):
  * state 0 is the start state and emits nothing: arcs out of it consume the
    first frame and carry no transition score;
  * ``labels`` are score-matrix columns (-1 on the arcs into the final state);
  * ``aux_labels`` are output symbols: ``token + token_offset`` on the arc that
    enters the first frame of a token, the topology's silence symbol on the arc
    that enters a word-boundary silence, 0 elsewhere (loops, blank);
  * ``scores`` are transition log-probs (the transition scale is applied later).
"""
from typing import List, Sequence

import k2
import numpy as np
import torch

from fsalign.errors import FsalignError

__all__ = ["Transcript", "validate_transcripts", "fsa_vec_from_arrays", "min_frames_of", "scale_transitions"]

Transcript = List[List[int]]


def scale_transitions(fsa: k2.Fsa, transition_scale: float) -> k2.Fsa:
    """Returns ``fsa`` with arc scores multiplied by γ = ``transition_scale`` (a copy unless γ = 1).

    Where the graphs have a ``penalty`` attribute (a part of each arc's score that is not a
    transition log-prob: the garbage and skip penalties of :mod:`fsalign.engine.mismatch`), that
    part is kept as it is: ``(scores - penalty) * γ + penalty``.
    """
    if transition_scale == 1.0:
        return fsa
    scaled = fsa.clone()
    if hasattr(fsa, "penalty"):
        scaled.scores = (fsa.scores - fsa.penalty) * float(transition_scale) + fsa.penalty
    else:
        scaled.scores = fsa.scores * float(transition_scale)
    return scaled


def validate_transcripts(transcripts, token_ids: Sequence[bool], what: str) -> List[Transcript]:
    """Checks the structure and the token ids of a batch of transcripts.

    Args:
      transcripts: utterance -> words -> token ids.
      token_ids: boolean table, ``token_ids[k]`` is True if k is a valid token id.
      what: the topology's description, for error messages.

    Returns:
      The transcripts as lists of lists of Python ints.

    Raises:
      FsalignError: naming the utterance and word of the first problem found.
    """
    if isinstance(transcripts, (str, bytes)) or not isinstance(transcripts, Sequence):
        raise FsalignError(
            f"transcripts must be a list (utterances) of lists (words) of lists of token ids, "
            f"got {type(transcripts).__name__}"
        )
    num_ids = len(token_ids)
    out = []
    for u, utt in enumerate(transcripts):
        if type(utt) is not list and (not isinstance(utt, Sequence) or isinstance(utt, (str, bytes))):
            raise FsalignError(
                f"utterance {u}: expected a list of words (each a list of token ids), got {utt!r}"
            )
        words = []
        for w, word in enumerate(utt):
            # (exact types first: the abstract-class checks cost microseconds per call)
            if type(word) is not list and (isinstance(word, (int, np.integer)) or not isinstance(word, Sequence)):
                raise FsalignError(
                    f"utterance {u}, word {w}: expected a list of token ids, got {word!r} "
                    f"(transcripts are utterance -> words -> token ids)"
                )
            if len(word) == 0:
                raise FsalignError(f"utterance {u}, word {w}: a word needs at least one token")
            ids = []
            for tok in word:
                if type(tok) is not int:
                    if not isinstance(tok, (int, np.integer)) or isinstance(tok, bool):
                        raise FsalignError(f"utterance {u}, word {w}: token {tok!r} is not an int")
                    tok = int(tok)
                if not (0 <= tok < num_ids and token_ids[tok]):
                    raise FsalignError(
                        f"utterance {u}, word {w}: token id {tok} is not a token of {what} "
                        f"(valid: {_describe_ids(token_ids)})"
                    )
                ids.append(tok)
            words.append(ids)
        out.append(words)
    return out


def _describe_ids(token_ids: Sequence[bool]) -> str:
    valid = [i for i, ok in enumerate(token_ids) if ok]
    if not valid:
        return "none"
    missing = [i for i in range(valid[0], valid[-1] + 1) if not token_ids[i]]
    text = f"{valid[0]}..{valid[-1]}"
    if missing:
        text += " except " + ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
    return text


def fsa_vec_from_arrays(per_utt: List[tuple], device) -> k2.Fsa:
    """Builds an FsaVec from per-utterance arc arrays.

    Args:
      per_utt: one ``(src, dst, label, score, aux)`` tuple of 1-D NumPy arrays
        per utterance (arcs sorted by ``src``; the final state is the largest);
        ``aux`` None makes an acceptor.
      device: where the FsaVec goes.
    """
    fsas = []
    for src, dst, label, score, aux in per_utt:
        arcs = torch.from_numpy(
            np.stack([src, dst, label, score.astype(np.float32).view(np.int32)], axis=1).astype(np.int32)
        )
        fsa = k2.Fsa(arcs)
        if aux is not None:
            fsa.aux_labels = torch.from_numpy(aux.astype(np.int32))
        fsas.append(fsa)
    vec = k2.create_fsa_vec(fsas)
    return vec.to(device) if torch.device(device) != vec.device else vec


def min_frames_of(fsa: k2.Fsa) -> torch.Tensor:
    """Fewest frames (arcs before the final arc) of any path, per graph.

    Caution:
      Cycles other than self-loops are not supported (k2 needs a DAG once the
      self-loops, which never shorten a path, are removed).

    Args:
      fsa: FsaVec of training graphs (any device).

    Returns:
      Tensor of shape (B,), int64 on CPU; -1 where a graph has no path.
    """
    fsa = fsa.to("cpu")
    values = fsa.arcs.values()
    self_loop = values[:, 0] == values[:, 1]
    final = fsa.labels == -1
    probe = fsa.clone()  # k2.Fsa(fsa.arcs) would share, and corrupt, the arcs
    probe.labels = torch.where(
        self_loop, torch.zeros_like(fsa.labels), torch.where(final, fsa.labels, torch.ones_like(fsa.labels))
    )
    probe.scores = torch.where(final, torch.zeros_like(fsa.scores), -torch.ones_like(fsa.scores))
    probe = k2.top_sort(k2.connect(k2.remove_epsilon_self_loops(probe)))
    tot = probe.get_tot_scores(log_semiring=False, use_double_scores=True)
    out = torch.where(torch.isfinite(tot), -tot, torch.full_like(tot, -1.0))
    return out.round().to(torch.int64)
