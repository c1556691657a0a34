"""Evaluation of a trained model on a cut set: loss, greedy LER, alignment quality (A.4.2).

Alignment quality compares Viterbi word spans under the training topology (with the
training scales) against the reference word times the cuts carry (``Batch.word_alignments``);
encoder frames are placed on the audio as ``fsalign align`` places them
(:func:`fsalign.results.alignment.frame_time_offset`).

Dimension symbols:
  B: batch size.
  T: encoder frames.
  C: output columns.
"""
import logging
from typing import Any, Dict, List, Optional

import torch

from fsalign.engine.fullsum import full_sum_loss
from fsalign.engine.topology import Topology
from fsalign.engine.viterbi import viterbi_align
from fsalign.results.alignment import frame_time_offset
from fsalign.results.metrics import (
    Average,
    ErrorStats,
    TimeStampError,
    average_token_duration,
    error_rate,
    greedy_decode,
    silence_ratio,
    time_stamp_error,
    word_error_rate,
)

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    topology: Topology,
    posterior_scale: float = 1.0,
    transition_scale: float = 1.0,
    prior_scale: float = 0.0,
    log_prior: Optional[torch.Tensor] = None,
    device: Optional[torch.device] = None,
    tokenizer=None,
) -> Dict[str, Any]:
    """Dev loss, greedy label error rate and alignment quality.

    Args:
      model: a :class:`~fsalign.models.conformer.ConformerModel` (put in eval mode here).
      loader: yields :class:`fsalign.corpus.cuts.Batch` (``make_dataloader``).
      topology: the topology the loss and the Viterbi alignment use.
      posterior_scale, transition_scale, prior_scale: α, γ, β for loss and alignment.
      log_prior: Tensor of shape (C,) used with ``prior_scale``, or None.
      device: where to compute (default: the model's device).
      tokenizer: with a SentencePiece tokenizer (``spm``/``bpe``) the greedy output is
        also decoded to words (pieces starting with "▁" start a word) for a WER.

    Returns:
      dict: ``loss`` (full-sum NLL per frame), ``ler`` (greedy, collapsed, blank/silence
      removed, over tokens), ``wer`` (SentencePiece units only, else None),
      ``tse_boundary_ms``, ``tse_centre_ms`` (None without
      reference word times), ``silence_ratio``, ``token_duration_ms``, ``utterances``,
      ``aligned_words``, ``infeasible`` (utterances too short for their transcript) and
      ``unscored`` (utterances whose reference word count differs from the transcript).
    """
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    blank = model.blank
    frame_s = None
    loss_sum, loss_frames = 0.0, 0
    ler, wer, tse = ErrorStats(0, 0, 0, 0), ErrorStats(0, 0, 0, 0), TimeStampError(0.0, 0.0, 0)
    word_starts = _word_starts(tokenizer)
    sil, dur = Average(0.0, 0), Average(0.0, 0)
    utterances = infeasible = unscored = 0
    for batch in loader:
        if len(batch) == 0:
            continue
        batch = batch.to(device)
        frame_s = batch.frame_shift_s * model.subsampling
        offset_s = frame_time_offset(batch.frame_shift_s, model.subsampling)
        h, lengths = model.forward_encoder(batch.features, batch.feature_lengths)
        log_probs = model.ctc_log_probs(model.ctc_logits(h))
        graphs = topology.compile(batch.transcripts, device=device)
        scales = dict(posterior_scale=posterior_scale, prior_scale=prior_scale, log_prior=log_prior,
                      transition_scale=transition_scale)
        nll = full_sum_loss(log_probs, lengths, graphs, **scales)
        finite = torch.isfinite(nll)
        loss_sum += float(nll[finite].sum())
        loss_frames += int(lengths[finite].sum())
        utterances += len(batch)
        refs = [[t for w in words for t in w] for words in batch.transcripts]
        hyps = greedy_decode(log_probs, lengths, blank=blank)
        ler = ler + error_rate(refs, hyps)
        if word_starts is not None:
            ref_texts = [tokenizer.decode(words) for words in batch.transcripts]
            wer = wer + word_error_rate(ref_texts, [tokenizer.decode(_split_words(h, word_starts)) for h in hyps])
        alignments = viterbi_align(log_probs, lengths, graphs, on_infeasible="skip", **scales)
        ref_spans, hyp_spans = [], []
        for ali, ref in zip(alignments, batch.word_alignments):
            if ali is None:
                infeasible += 1
                continue
            sil = sil + silence_ratio([ali.labels], silence=blank)
            dur = dur + average_token_duration([ali.token_times(frame_s)])  # durations: no offset
            if ref is None:
                continue
            if len(ref) != len(ali.words):
                unscored += 1
                continue
            ref_spans.append([(item.start, item.start + item.duration) for item in ref])
            hyp_spans.append(ali.word_times(frame_s, offset_s=offset_s))
        tse = tse + time_stamp_error(ref_spans, hyp_spans)
    model.train(was_training)
    return {
        "loss": loss_sum / loss_frames if loss_frames else float("nan"),
        "ler": ler.rate if ler.ref_length else None,
        "wer": wer.rate if wer.ref_length else None,
        "tse_boundary_ms": 1000 * tse.boundary if tse.num_words else None,
        "tse_centre_ms": 1000 * tse.centre if tse.num_words else None,
        "silence_ratio": sil.value if sil.count else None,
        "token_duration_ms": 1000 * dur.value if dur.count else None,
        "utterances": utterances,
        "aligned_words": tse.num_words,
        "infeasible": infeasible,
        "unscored": unscored,
    }


def _word_starts(tokenizer) -> Optional[List[bool]]:
    if tokenizer is None or getattr(tokenizer, "unit", "") not in ("spm", "bpe"):
        return None
    return [name.startswith("▁") for name in tokenizer.token_names]


def _split_words(ids: List[int], word_starts: List[bool]) -> List[List[int]]:
    words: List[List[int]] = []
    for i in ids:
        if word_starts[i] or not words:
            words.append([])
        words[-1].append(i)
    return words
