"""Evaluation of a trained model on a cut set: loss, greedy LER, alignment quality (A.4.2).

The loss and the alignment are those of the criterion being trained
(:class:`~fsalign.training.criterion.FullSumCriterion`: topology, scales and prior), so the
checkpoint kept as ``best.pt`` is the best under that criterion. Alignment quality compares the
Viterbi word spans with the reference word times the cuts carry (``Batch.word_alignments``)
with the comparer of ``fsalign tse`` (:class:`~fsalign.results.compare.AlignmentComparer`: words
matched by sequence, the same error definitions); encoder frames are placed on the audio as
``fsalign align`` places them (:meth:`~fsalign.scores.matrix.ScoreMatrix.from_posteriors`).

Dimension symbols:
  B: batch size.
  T: encoder frames.
  C: output columns.
"""
import logging
from typing import Any, Dict, List, Optional

import torch

from fsalign.results.compare import AlignmentComparer
from fsalign.results.metrics import (
    Average,
    ErrorStats,
    average_token_duration,
    blank_ratio,
    error_rate,
    greedy_decode,
    silence_ratio,
    word_error_rate,
)
from fsalign.results.times import TimedSpan, UtteranceTimes
from fsalign.training.criterion import FullSumCriterion

__all__ = ["evaluate"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, criterion: FullSumCriterion, device: Optional[torch.device] = None,
             tokenizer=None) -> Dict[str, Any]:
    """Dev loss, greedy label error rate and alignment quality under ``criterion``.

    Args:
      model: a :class:`~fsalign.models.conformer.ConformerModel` (put in eval mode here).
      loader: yields :class:`fsalign.corpus.cuts.Batch` (``make_dataloader``).
      criterion: the criterion whose loss and Viterbi alignment are measured (its prior is
        computed on the dev batches; a running prior is read, not updated).
      device: where to compute (default: the model's device).
      tokenizer: with a SentencePiece tokenizer (``spm``/``bpe``) the greedy output is
        also decoded to words (pieces starting with "▁" start a word) for a WER.

    Returns:
      dict: ``loss`` (full-sum NLL per frame), ``ler`` (greedy, collapsed, blank/silence
      removed, over tokens), ``wer`` (SentencePiece units only, else None),
      ``silence_ratio`` (frames in no word), ``blank_ratio`` (frames in no token: on
      blank/silence), ``token_duration_ms``, ``utterances``, ``aligned_words``,
      ``infeasible`` (utterances too short for their transcript), ``unscored``
      (utterances whose reference words differ from the transcript's) and the word errors
      of :meth:`fsalign.results.compare.AlignmentComparison.errors` (``tse_boundary_ms``,
      ``tse_centre_ms``, ``onset_ms``, ``offset_ms``, their biases, ``within_ms``, ...; None
      without reference word times; no token errors: the cuts carry reference words only).
    """
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    loss_sum, loss_frames = 0.0, 0
    ler, wer, comparer = ErrorStats(0, 0, 0, 0), ErrorStats(0, 0, 0, 0), AlignmentComparer()
    word_starts = _word_starts(tokenizer)
    sil, blank, dur = Average(0.0, 0), Average(0.0, 0), Average(0.0, 0)
    utterances = infeasible = 0
    frame_step_s = 0.0
    for batch in loader:
        if len(batch) == 0:
            continue
        batch = batch.to(device)
        log_probs, lengths = model.log_probs(batch.features, batch.feature_lengths)
        graphs = criterion.topology.compile(batch.transcripts, device=device)
        matrix = criterion.matrix(log_probs, lengths, graphs, batch.frame_shift_s, model.subsampling, update=False)
        nll = matrix.loss()
        frame_step_s = matrix.frame_step_s
        finite = torch.isfinite(nll)
        loss_sum += float(nll[finite].sum())
        loss_frames += int(lengths[finite].sum())
        utterances += len(batch)
        refs = [[t for w in words for t in w] for words in batch.transcripts]
        hyps = greedy_decode(log_probs, lengths, blank=model.blank)
        ler = ler + error_rate(refs, hyps)
        if word_starts is not None:
            ref_texts = [tokenizer.decode(words) for words in batch.transcripts]
            wer = wer + word_error_rate(ref_texts, [tokenizer.decode(_split_words(h, word_starts)) for h in hyps])
        for b, (ali, ref) in enumerate(zip(matrix.best_paths(on_infeasible="skip"), batch.word_alignments)):
            if ali is None:
                infeasible += 1
                continue
            sil = sil + silence_ratio([ali.words], [ali.num_frames])
            blank = blank + blank_ratio([ali.tokens], [ali.num_frames])
            dur = dur + average_token_duration([ali.tokens])  # in frames
            if ref is None:
                continue
            times = matrix.word_times(ali)
            words = batch.words[b] if len(batch.words[b]) == len(times) else ["?"] * len(times)
            hyp = UtteranceTimes(batch.cut_ids[b], batch.durations[b],
                                 [TimedSpan(w, s, e) for w, (s, e) in zip(words, times)])
            comparer.add(batch.cut_ids[b], UtteranceTimes(batch.cut_ids[b], batch.durations[b], list(ref)), hyp)
    model.train(was_training)
    errors = comparer.result().errors()
    return {
        "loss": loss_sum / loss_frames if loss_frames else float("nan"),
        "ler": ler.rate if ler.ref_length else None,
        "wer": wer.rate if wer.ref_length else None,
        "tse_boundary_ms": errors.pop("tse_boundary_ms"),
        "tse_centre_ms": errors.pop("tse_centre_ms"),
        "silence_ratio": sil.value if sil.count else None,
        "blank_ratio": blank.value if blank.count else None,
        "token_duration_ms": 1000 * frame_step_s * dur.value if dur.count else None,
        "utterances": utterances,
        "aligned_words": errors["num_words"],
        "infeasible": infeasible,
        "unscored": len(comparer.result().skipped),
        **errors,
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
