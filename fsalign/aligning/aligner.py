"""Aligning a corpus: a trained checkpoint + lhotse cuts -> word and token times per utterance.

* :func:`make_scorer` builds the scorer of a checkpoint for posterior alignment (Viterbi under
  a topology, with prior scale, blank penalty and the training scales, eq. 6 and Table 14) or
  gradient alignment (GradScore / GradScoreExt at the 10 ms feature rate, section 5, of the CTC,
  AED or hybrid label scores of eq. 50: :func:`grad_weights`, by default AED when the checkpoint
  has a decoder); every option is checked there, before any audio is read;
* :class:`Aligner` aligns one :class:`~fsalign.corpus.cuts.Batch` with it and turns the best
  paths into :class:`~fsalign.results.times.UtteranceTimes`. A batch that fails as a whole is
  retried one utterance at a time, so one bad utterance costs only itself;
* :func:`align_cuts` runs the plan of :mod:`fsalign.aligning.batches` through a DataLoader
  and yields the :class:`AlignResult` s of each batch.

Times come from the score matrix (:class:`~fsalign.scores.matrix.ScoreMatrix`): frame ``f``
starts at ``f * frame_step_s + time_offset_s``. A word starts at the first frame of its first
token and ends at the end of the last frame of its last token (paper, section 5); times are
clipped to [0, duration of the cut].

Dimension symbols:
  B: cuts in a batch.
  T': feature frames (10 ms).
  F: feature dimension.
"""
import logging
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

import torch
from lhotse import CutSet
from lhotse.cut import Cut

from fsalign.aligning.batches import plan_batches, shard_windows
from fsalign.aligning.journal import AlignResult
from fsalign.checkpoint import LoadedCheckpoint
from fsalign.corpus.cuts import Batch, CutDataset, failure_reason
from fsalign.corpus.tokenizers import Tokenizer
from fsalign.engine.builtin import TOPOLOGIES, make_topology
from fsalign.engine.mismatch import MismatchOptions
from fsalign.engine.scales import Scales
from fsalign.errors import FsalignError
from fsalign.results.alignment import Alignment
from fsalign.results.times import UNTRANSCRIBED_LABEL, MismatchTimes, SkippedWord, TimedSpan, UtteranceTimes
from fsalign.scores.gradscore import VARIANTS, GradientScorer, grad_source_weights
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.posterior import PosteriorScorer
from fsalign.util import LongAudio, Seconds, check_option, is_finite_number

__all__ = ["SCORES", "AlignResult", "Aligner", "make_scorer", "align_cuts", "has_decoder", "grad_weights"]

logger = logging.getLogger(__name__)

SCORES = ("posterior", *VARIANTS)

MISMATCH_NEEDS_POSTERIOR = (
    "allowing transcripts that do not match the audio (--allow-mismatch) needs --scores posterior: gradient "
    "scores (grad, gradext) have one column per transcript position, each placed where its gradient falls, "
    "and no score for untranscribed speech or for a word that was not spoken")


def has_decoder(model) -> bool:
    """Whether ``model`` has an AED decoder (a Conformer built with ``aed_layers > 0``)."""
    return callable(getattr(model, "aed_log_probs", None)) and getattr(model, "decoder", True) is not None


def grad_weights(scores: str, grad_source: Optional[str] = None, aed_weight: Optional[float] = None,
                 decoder: bool = False, model_name: str = "this checkpoint") -> Optional[Tuple[str, float, float]]:
    """The grad source and (λ_CTC, λ_AED) of eq. 50 for a model with or without an AED decoder.

    Args:
      scores: "posterior", "grad" or "gradext".
      grad_source: "ctc", "aed" or "hybrid"; None: "hybrid" when ``aed_weight`` is given, else
        "aed" when the model has a decoder, else "ctc".
      aed_weight: λ_AED of "hybrid" (λ_CTC = 1 − λ_AED; default 0.5).
      decoder: whether the model has an AED decoder (:func:`has_decoder`).
      model_name: how an error names the model.

    Returns:
      ``(source, ctc_weight, aed_weight)``; None for posterior scores.

    Raises:
      FsalignError: a grad option with posterior scores, an unknown source or weight, or aed/hybrid
        asked of a model without a decoder.
    """
    if scores == "posterior":
        if grad_source is not None or aed_weight is not None:
            raise FsalignError("grad source and aed weight apply to gradient scores (grad, gradext), not 'posterior'")
        return None
    if grad_source is None:
        grad_source = "hybrid" if aed_weight is not None else ("aed" if decoder else "ctc")
    ctc_weight, aed = grad_source_weights(grad_source, aed_weight)
    if grad_source != "ctc" and not decoder:
        raise FsalignError(f"grad source {grad_source!r} needs a model with an AED decoder, and {model_name} has none "
                           f"(train one with --aed-layers N, or use grad source 'ctc')")
    return grad_source, ctc_weight, aed


def make_scorer(checkpoint: LoadedCheckpoint, scores: str = "posterior", topology: Optional[str] = None,
                prior_scale: float = 0.0, blank_penalty: float = 0.0, posterior_scale: Optional[float] = None,
                transition_scale: Optional[float] = None, grad_p: float = 0.1, grad_chunk_size: Optional[int] = 32,
                grad_blank_score: float = -6.0, grad_percentile: float = 60.0, grad_prefix: str = "forward",
                grad_source: Optional[str] = None, aed_weight: Optional[float] = None,
                mismatch: Optional[MismatchOptions] = None,
                long_audio: LongAudio = LongAudio()) -> Union[PosteriorScorer, GradientScorer]:
    """The scorer of a checkpoint, every option checked.

    Args:
      checkpoint: from :func:`fsalign.checkpoint.load_checkpoint` (model on its device).
      scores: "posterior" (Viterbi on the model's posteriors), "grad" (GradScore) or
        "gradext" (GradScoreExt).
      topology: "ctc", "hmm" or "relaxed" for posterior alignment; None: the training topology.
      prior_scale: β; needs the checkpoint's corpus prior when != 0.
      blank_penalty: added to the blank/silence log-probability before renormalising (Table 14).
      posterior_scale: α; None: the training criterion's (with the training topology), else 1.
      transition_scale: γ; None: as ``posterior_scale``.
      grad_p: p of the gradient norm (eq. 22).
      grad_chunk_size: label positions per batched gradient (bounds memory; None: all).
      grad_blank_score: γ_ε of GradScore.
      grad_percentile: γ_percentile of GradScoreExt.
      grad_prefix: CTC prefix score of G, ``"forward"`` or ``"onset"``.
      grad_source: the label scores G differentiates (grad/gradext): "ctc", "aed" or "hybrid"
        (eq. 50); None: AED when the model has a decoder, else CTC (:func:`grad_weights`).
      aed_weight: λ_AED of "hybrid", in [0, 1] (λ_CTC = 1 − λ_AED; default 0.5).
      mismatch: allow transcripts that do not match the audio exactly (``--allow-mismatch``,
        :class:`~fsalign.engine.mismatch.MismatchOptions`); posterior scores only. None: as they are.
      long_audio: when a recording is long and how its encoder windows are cut (posterior scores;
        :class:`~fsalign.util.LongAudio`, docs/long_audio.md).

    Raises:
      FsalignError: an option outside its range (named, with the value and the valid range), or
        ``mismatch`` with gradient scores.
    """
    check_option("scores", scores, scores in SCORES, f"one of {SCORES}")
    check_option("mismatch", mismatch, mismatch is None or isinstance(mismatch, MismatchOptions),
                 "None or MismatchOptions")
    if mismatch is not None and scores != "posterior":
        raise FsalignError(MISMATCH_NEEDS_POSTERIOR)
    model, _, trained, metadata = checkpoint
    frame_shift = float(metadata.get("frame_shift_s", 0.01))
    weights = grad_weights(scores, grad_source, aed_weight, has_decoder(model))
    if weights is not None:
        _, ctc_weight, aed = weights
        return GradientScorer(model, scores, p=grad_p, blank_score=grad_blank_score, percentile=grad_percentile,
                              prefix=grad_prefix, ctc_weight=ctc_weight, aed_weight=aed, chunk_size=grad_chunk_size,
                              frame_shift_s=frame_shift)
    check_option("topology", topology, topology is None or topology in TOPOLOGIES, f"one of {TOPOLOGIES}")
    for name, value in (("prior scale", prior_scale), ("posterior scale", posterior_scale),
                        ("transition scale", transition_scale)):
        check_option(name, value, value is None or is_finite_number(value), "a finite number")
    trained_kind = (metadata.get("topology") or {}).get("kind")
    same = topology is None or topology == trained_kind
    topo = trained if same else make_topology(topology, model.num_labels)
    criterion = (metadata.get("criterion") or {}) if same else {}
    log_prior = None
    if prior_scale:
        log_prior = metadata.get("corpus_prior")
        if log_prior is None:
            raise FsalignError("prior scale needs the corpus prior, and this checkpoint has none "
                               "(it is stored at the end of training)")
        log_prior = log_prior.to(next(model.parameters()).device)
    scales = Scales(
        posterior_scale=criterion.get("posterior_scale", 1.0) if posterior_scale is None else posterior_scale,
        prior_scale=prior_scale, log_prior=log_prior,
        transition_scale=criterion.get("transition_scale", 1.0) if transition_scale is None else transition_scale,
    )
    return PosteriorScorer(model, topo, scales, blank_penalty, frame_shift, mismatch, long_audio)


class Aligner:
    """Aligns :class:`~fsalign.corpus.cuts.Batch` es with a scorer.

    A long recording (:class:`~fsalign.util.LongAudio`) is aligned with posterior scores only, and
    without ``mismatch``: gradient scores take one backward pass through the whole encoder per
    transcript position, and the mismatch graphs run on k2 lattices of the whole recording; such
    a cut fails as "too long", with the reason.

    Args:
      scorer: a :class:`~fsalign.scores.posterior.PosteriorScorer` or
        :class:`~fsalign.scores.gradscore.GradientScorer` (see :func:`make_scorer`).
      tokenizer: the checkpoint's tokenizer (names tokens; loads transcripts).
      long_audio: when a recording is long; None: the scorer's (or the default).
    """

    def __init__(self, scorer: Union[PosteriorScorer, GradientScorer], tokenizer: Tokenizer,
                 long_audio: Optional[LongAudio] = None):
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.long_audio = long_audio or getattr(scorer, "long_audio", LongAudio())
        self.model = scorer.model
        self.model.eval()
        self.device = next(self.model.parameters()).device

    @classmethod
    def from_checkpoint(cls, checkpoint: LoadedCheckpoint, scores: str = "posterior", **options) -> "Aligner":
        """``Aligner(make_scorer(checkpoint, scores, **options), checkpoint.tokenizer, options' long_audio)``."""
        return cls(make_scorer(checkpoint, scores, **options), checkpoint.tokenizer, options.get("long_audio"))

    def settings(self) -> Dict[str, Any]:
        """Everything that determines the alignments (recorded with the results)."""
        return self.scorer.settings()

    def align(self, batch: Batch) -> List[AlignResult]:
        """Results of every cut of the batch (``batch.order``): loaded cuts aligned, the rest failed.

        If aligning the loaded cuts together raises (any error, out-of-memory included),
        each is aligned alone and only the ones that still fail are reported.
        """
        results = {cut_id: AlignResult(cut_id, duration, error=batch.failed[cut_id])
                   for cut_id, duration in batch.order if cut_id in batch.failed}
        refused = {b: self.refuse_long(cut_id, d) for b, (cut_id, d) in enumerate(zip(batch.cut_ids, batch.durations))}
        refused = {b: reason for b, reason in refused.items() if reason is not None}
        if refused:
            results.update({batch.cut_ids[b]: AlignResult(batch.cut_ids[b], batch.durations[b], error=reason)
                            for b, reason in refused.items()})
            kept = batch.select([b for b in range(len(batch)) if b not in refused])
            results.update({r.cut_id: r for r in self.align(kept)})
            return [results[cut_id] for cut_id, _ in batch.order]
        if len(batch):
            try:
                results.update(self._align(batch))
            except Exception as e:
                if len(batch) == 1:
                    results[batch.cut_ids[0]] = AlignResult(batch.cut_ids[0], batch.durations[0],
                                                            error=failure_reason("error", e))
                else:
                    logger.warning("batch of %d cuts failed (%s); aligning them one at a time", len(batch), e)
                    for k in range(len(batch)):
                        results.update({r.cut_id: r for r in self.align(batch.select([k]))})
        return [results[cut_id] for cut_id, _ in batch.order]

    def refuse_long(self, cut_id: str, duration: Seconds) -> Optional[str]:
        """Why this aligner does not align a long recording (a "too long" failure reason), or None."""
        if not self.long_audio.is_long(duration):
            return None
        what = f"cut {cut_id} is {duration:.1f} s long (long recordings: over {self.long_audio.threshold_s:g} s)"
        if not isinstance(self.scorer, PosteriorScorer):
            return failure_reason("too long", f"{what}: gradient scores (grad, gradext) need a backward pass through "
                                              f"the whole encoder per transcript position; align it with --scores "
                                              f"posterior (windowed encoder)")
        if self.scorer.mismatch is not None:
            return failure_reason("too long", f"{what}: --allow-mismatch aligns on a k2 lattice of the whole "
                                              f"recording, which does not fit in memory; align it without "
                                              f"--allow-mismatch or cut it into shorter segments")
        return None

    def score(self, batch: Batch) -> ScoreMatrix:
        """The score matrix of a batch (on the model's device)."""
        return self.scorer(batch.features.to(self.device), batch.feature_lengths.to(self.device), batch.transcripts)

    def _align(self, batch: Batch) -> Dict[str, AlignResult]:
        matrix = self.score(batch)
        out: Dict[str, AlignResult] = {}
        keep = []
        for b, bad in enumerate(matrix.has_nan().tolist()):
            if bad:
                out[batch.cut_ids[b]] = AlignResult(batch.cut_ids[b], batch.durations[b], error=failure_reason(
                    "NaN scores", "the model's scores contain NaN"))
            else:
                keep.append(b)
        if not keep:
            return out
        matrix = matrix.select(keep)
        for k, (b, ali) in enumerate(zip(keep, matrix.best_paths(on_infeasible="skip"))):
            cut_id, duration = batch.cut_ids[b], batch.durations[b]
            if ali is None:
                out[cut_id] = AlignResult(cut_id, duration, error=failure_reason(
                    "too short", f"{int(matrix.lengths[k])} frames of {matrix.frame_step_s * 1000:g} ms, "
                                 f"the transcript needs {int(matrix.min_frames[k])}"))
            else:
                written = batch.written[b] if batch.written else None
                out[cut_id] = AlignResult(cut_id, duration, self.times(matrix, cut_id, duration, batch.words[b],
                                                                       batch.transcripts[b], ali, written))
        return out

    def times(self, matrix: ScoreMatrix, cut_id: str, duration: Seconds, words: List[str],
              transcript: List[List[int]], ali: Alignment, written=None) -> UtteranceTimes:
        """Seconds of the word and token spans of ``ali`` (clipped to [0, ``duration``]).

        With ``written`` (the cut's :class:`~fsalign.corpus.normalize.WrittenWord` s), every written
        token that became spoken words spans from the start of its first word to the end of its
        last (``UtteranceTimes.written``); a token that says nothing (a dash) gets no time.
        """

        def span(label: str, frames) -> TimedSpan:
            start, end = matrix.seconds(frames)
            return TimedSpan(label, round(min(start, duration), 9), round(min(end, duration), 9))

        split_otherwise = len(words) != len(transcript)
        if split_otherwise:  # a tokenizer that splits differently: name words by their tokens
            words = [self.tokenizer.decode([w]).replace(" ", "_") for w in transcript]
        names = self.tokenizer.token_names
        word_spans = [span(words[w.index], w) for w in ali.words]
        by_index = {w.index: s for w, s in zip(ali.words, word_spans)}  # without the skipped words
        written_spans = []
        if written and not split_otherwise:
            k = 0
            for token in written:
                inside = [by_index[i] for i in range(k, k + len(token.spoken)) if i in by_index]
                if inside:
                    written_spans.append(TimedSpan(token.text, inside[0].start, inside[-1].end))
                k += len(token.spoken)
        mismatch = None
        if getattr(self.scorer, "mismatch", None) is not None:
            skipped, end = [], 0.0
            for i, word in enumerate(words):
                if i in by_index:
                    end = by_index[i].end
                else:
                    skipped.append(SkippedWord(word, i, end))
            mismatch = MismatchTimes(skipped, [span(UNTRANSCRIBED_LABEL, u) for u in ali.untranscribed])
        return UtteranceTimes(cut_id, duration, word_spans, [span(names[t.token], t) for t in ali.tokens],
                              written=written_spans, mismatch=mismatch)


class _Plan:
    """The batches still to align: :func:`plan_batches` minus those whose cuts are all done."""

    def __init__(self, batches: Iterable[CutSet], done: Set[str]):
        self.batches = batches
        self.done = done

    def __iter__(self):
        for batch in self.batches:
            if any(cut.id not in self.done for cut in batch):
                yield batch


def align_cuts(aligner: Aligner, cuts: Union[CutSet, Iterable[Cut]], max_duration: Seconds = 100.0,
               window: int = 1000, shard: Tuple[int, int] = (0, 1), num_cuts: Optional[int] = None,
               done: Optional[Set[str]] = None, num_workers: int = 0,
               extractor=None) -> Iterator[List[AlignResult]]:
    """Aligns every cut of ``shard`` not in ``done``, batch by batch.

    Batches are those of :func:`~fsalign.aligning.batches.plan_batches` over
    :func:`~fsalign.aligning.batches.shard_windows` (a long recording of ``aligner.long_audio``
    alone in its batch), whatever ``done`` holds: a batch with
    some cuts done is recomputed whole (the same batch as before, so the same numbers) and
    only its new cuts are yielded.

    Args:
      aligner: the :class:`Aligner`.
      cuts: the cut manifest (a lazy CutSet is read as it goes).
      max_duration: seconds of audio per batch (0: one cut per batch).
      window: cuts sorted and batched together; a shard is a whole number of windows.
      shard: ``(i, n)``: this process's part of the manifest.
      num_cuts: number of cuts in the manifest (needed for ``n > 1``).
      done: ids to skip (already aligned or failed).
      num_workers: DataLoader workers loading features.
      extractor: on-the-fly feature extractor (default: the training fbank).

    Returns:
      Iterator of lists of :class:`AlignResult`, one list per batch (cuts in decreasing
      duration), cuts in ``done`` left out.
    """
    done = set() if done is None else set(done)
    plan = _Plan(plan_batches(shard_windows(cuts, window, shard, num_cuts), max_duration,
                              aligner.long_audio.threshold_s), done)
    loader = torch.utils.data.DataLoader(
        CutDataset(aligner.tokenizer, extractor, on_error="report", sort=False), sampler=plan, batch_size=None,
        num_workers=num_workers, pin_memory=aligner.device.type == "cuda",
    )
    for batch in loader:
        yield [result for result in aligner.align(batch) if result.cut_id not in done]
