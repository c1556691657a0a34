"""Metrics of the synthetic tables (appendix A.4.2) on a held-out batch.

* LER [%]: best-path (greedy) decoding of the model output — per frame the
  argmax of p(y|x), consecutive equal labels merged, ε removed — against the
  reference labels, edit distance by ``kaldialign``, summed over the set and
  divided by the number of reference labels. The same decoding serves HMM and
  CTC models (with the HMM topology two equal neighbouring tokens would merge;
  the default words have none).
* Fw. CE: ``-log p(y_t|x_t)`` of the reference alignment, averaged over all
  frames of the set.
* E p(ε|x) [%]: the ε posterior averaged over all frames of the set.
* TSE [frames]: Viterbi alignment with the training topology (α = 1, no prior,
  transition scale ``align_transition_scale``, default 0) against the true word
  boundaries: ``Σ_w |Δstart| + |Δend|`` over all words of the set, divided by
  twice the number of words.

Dimension symbols legend:
  B: batch size
  T: frames (padded)
  C: alignment labels (score-matrix columns)
"""
from typing import Dict, List, Optional, Sequence, Tuple

import kaldialign
import torch

from fsalign.alignment import Alignment
from fsalign.synthetic.data import EPSILON, SyntheticBatch
from fsalign.topology import Topology
from fsalign.viterbi import viterbi_align

__all__ = ["greedy_labels", "label_error_rate", "time_stamp_error", "evaluate_log_probs"]


def greedy_labels(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = EPSILON) -> List[List[int]]:
    """Best-path decoding: argmax per frame, merge repeats, drop ``blank``.

    Args:
      log_probs: Tensor of shape (B, T, C).
      lengths: Tensor of shape (B,).

    Returns:
      B label sequences.
    """
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for b, n in enumerate(lengths.tolist()):
        seq = torch.unique_consecutive(best[b, :n]).tolist()
        out.append([y for y in seq if y != blank])
    return out


def label_error_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> float:
    """Corpus LER in percent: total edits over total reference labels."""
    errors = sum(kaldialign.edit_distance(list(r), list(h))["total"] for r, h in zip(refs, hyps))
    num_ref = sum(len(r) for r in refs)
    return 100.0 * errors / max(num_ref, 1)


def time_stamp_error(
    refs: Sequence[Sequence[Tuple[int, int]]], hyps: Sequence[Sequence[Tuple[int, int]]]
) -> float:
    """TSE in frames: mean absolute start/end difference over all words of all utterances."""
    total, count = 0.0, 0
    for ref, hyp in zip(refs, hyps):
        if len(ref) != len(hyp):
            raise ValueError(f"reference has {len(ref)} words but the hypothesis has {len(hyp)}")
        for (rs, re_), (hs, he) in zip(ref, hyp):
            total += abs(rs - hs) + abs(re_ - he)
            count += 2
    return total / max(count, 1)


def evaluate_log_probs(
    log_probs: torch.Tensor,
    batch: SyntheticBatch,
    topology: Topology,
    align_transition_scale: float = 0.0,
    graphs=None,
) -> Tuple[Dict[str, float], List[Optional[Alignment]]]:
    """All four metrics of a held-out batch.

    Args:
      log_probs: Tensor of shape (B, T, C), the model's normalised log-posteriors.
      batch: the held-out batch with its ground truth.
      topology: the training topology (for the Viterbi alignment of the TSE).
      align_transition_scale: γ of the Viterbi alignment.
      graphs: precompiled ``topology.compile(batch.transcripts)``, optional.

    Returns:
      ({"ler", "fw_ce", "blank_posterior", "tse"}, the Viterbi alignments).
    """
    log_probs = log_probs.detach().float()
    lengths = batch.lengths.to(log_probs.device)
    mask = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :] < lengths[:, None]
    ref = batch.alignment.to(log_probs.device).clamp(min=0)
    ref_lp = log_probs.gather(-1, ref.unsqueeze(-1)).squeeze(-1)
    fw_ce = float(-ref_lp[mask].double().mean())
    blank_posterior = float(log_probs[..., EPSILON].exp()[mask].double().mean()) * 100.0
    refs = [[t for w in words for t in w] for words in batch.transcripts]
    ler = label_error_rate(refs, greedy_labels(log_probs, lengths))
    if graphs is None:
        graphs = topology.compile(batch.transcripts)
    alis = viterbi_align(
        log_probs, batch.lengths, graphs, posterior_scale=1.0, transition_scale=align_transition_scale
    )
    hyp_spans = [[(w.start, w.end) for w in a.words] for a in alis]
    tse = time_stamp_error(batch.word_spans, hyp_spans)
    return {"ler": ler, "fw_ce": fw_ce, "blank_posterior": blank_posterior, "tse": tse}, alis
