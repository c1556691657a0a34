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
from typing import Dict, List, Optional, Tuple

import torch

from fsalign.engine.topology import Topology
from fsalign.engine.viterbi import viterbi_align
from fsalign.results.alignment import Alignment
from fsalign.results.metrics import (
    blank_posterior,
    error_rate,
    framewise_ce,
    greedy_decode,
    time_stamp_error,
)
from fsalign.synthetic.data import EPSILON, SyntheticBatch

__all__ = ["greedy_labels", "evaluate_log_probs"]


def greedy_labels(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = EPSILON) -> List[List[int]]:
    """Best-path decoding with ε as blank: :func:`fsalign.results.metrics.greedy_decode`."""
    return greedy_decode(log_probs, lengths, blank=blank)


def evaluate_log_probs(
    log_probs: torch.Tensor,
    batch: SyntheticBatch,
    topology: Topology,
    align_transition_scale: float = 0.0,
    graphs=None,
) -> Tuple[Dict[str, float], List[Optional[Alignment]]]:
    """All four metrics of a held-out batch (with :mod:`fsalign.results.metrics`).

    Args:
      log_probs: Tensor of shape (B, T, C), the model's normalised log-posteriors.
      batch: the held-out batch with its ground truth.
      topology: the training topology (for the Viterbi alignment of the TSE).
      align_transition_scale: γ of the Viterbi alignment.
      graphs: precompiled ``topology.compile(batch.transcripts)``, optional.

    Returns:
      ({"ler": %, "fw_ce", "blank_posterior": %, "tse": frames}, the Viterbi alignments).
    """
    log_probs = log_probs.detach().float()
    lengths = batch.lengths.to(log_probs.device)
    refs = [[t for w in words for t in w] for words in batch.transcripts]
    ler = 100.0 * error_rate(refs, greedy_labels(log_probs, lengths)).rate
    fw_ce = framewise_ce(log_probs, lengths, batch.alignment.clamp(min=0)).value
    blank = 100.0 * blank_posterior(log_probs, lengths, blank=EPSILON).value
    if graphs is None:
        graphs = topology.compile(batch.transcripts)
    alis = viterbi_align(
        log_probs, batch.lengths, graphs, posterior_scale=1.0, transition_scale=align_transition_scale
    )
    tse = time_stamp_error(batch.word_spans, [a.words for a in alis]).boundary
    return {"ler": ler, "fw_ce": fw_ce, "blank_posterior": blank, "tse": tse}, alis
