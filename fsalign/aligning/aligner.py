"""Aligning a corpus: a trained checkpoint + lhotse cuts -> word and token times per utterance.

* :func:`~fsalign.aligning.scorers.make_scorer` (also importable from here) builds the scorer of
  a checkpoint, posterior or gradient, every option checked before any audio is read;
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
from fsalign.aligning.scorers import MISMATCH_NEEDS_POSTERIOR, SCORES, grad_weights, has_decoder, make_scorer
from fsalign.aligning.segments import expected_boundaries_by_segments
from fsalign.checkpoint import LoadedCheckpoint
from fsalign.corpus.cuts import Batch, CutDataset, failure_reason
from fsalign.corpus.tokenizers import Tokenizer
from fsalign.engine.builtin import CtcTopology, HmmTopology
from fsalign.results.alignment import Alignment, TokenSpan, WordSpan
from fsalign.results.confidence import span_confidences, written_confidence
from fsalign.results.times import UNTRANSCRIBED_LABEL, MismatchTimes, SkippedWord, TimedSpan, UtteranceTimes
from fsalign.scores.gradscore import GradientScorer
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.posterior import PosteriorScorer
from fsalign.util import LongAudio, Seconds, check_option

__all__ = ["SCORES", "BOUNDARIES", "default_boundaries", "MISMATCH_NEEDS_POSTERIOR", "AlignResult", "Aligner",
           "make_scorer", "align_cuts", "has_decoder", "grad_weights"]

logger = logging.getLogger(__name__)

BOUNDARIES = ("viterbi", "expected")
"""Where :class:`Aligner` puts word and token boundaries (its ``boundaries`` argument)."""


def default_boundaries(scorer: Union[PosteriorScorer, GradientScorer]) -> str:
    """The boundaries of an :class:`Aligner` built without ``boundaries``.

    ``"expected"`` where ``scorer``'s topology is a built-in one (CTC, relaxed, HMM; gradient
    scores), else ``"viterbi"`` (a custom topology, ``--allow-mismatch``). The posterior-mean
    boundaries measured better than the best path's frame edges for every model and corpus in
    docs/results.md.
    """
    topology = getattr(scorer, "graph_topology", None)
    return "expected" if topology is None or isinstance(topology, (CtcTopology, HmmTopology)) else "viterbi"


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
      boundaries: where word and token boundaries go (:data:`BOUNDARIES`): ``"viterbi"``, the
        frame edges of the best path; ``"expected"``, the posterior-mean boundary over all paths
        (:meth:`~fsalign.scores.matrix.ScoreMatrix.expected_boundaries`), finer than a frame; the
        words and their order are the best path's either way. Built-in topologies only; over a
        long recording, stretch by stretch between the best path's pauses
        (:mod:`fsalign.aligning.segments`: the full sum over all of it is not memory-bounded).
        None (the default): ``"expected"`` where the scorer's topology allows it, else
        ``"viterbi"`` (:func:`default_boundaries`).
      long_audio: when a recording is long; None: the scorer's (or the default).
    """

    def __init__(self, scorer: Union[PosteriorScorer, GradientScorer], tokenizer: Tokenizer,
                 boundaries: Optional[str] = None, long_audio: Optional[LongAudio] = None):
        if boundaries is None:
            boundaries = default_boundaries(scorer)
        check_option("boundaries", boundaries, boundaries in BOUNDARIES, f"one of {BOUNDARIES}")
        if boundaries == "expected":
            check_option("boundaries", boundaries, default_boundaries(scorer) == "expected",
                         "'viterbi' with a custom topology or --allow-mismatch (expected boundaries need a "
                         "built-in CTC, relaxed or HMM topology)")
        self.boundaries = boundaries
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.long_audio = long_audio or getattr(scorer, "long_audio", LongAudio())
        self.model = scorer.model
        self.model.eval()
        self.device = next(self.model.parameters()).device

    @classmethod
    def from_checkpoint(cls, checkpoint: LoadedCheckpoint, scores: str = "posterior",
                        boundaries: Optional[str] = None, **options) -> "Aligner":
        """``Aligner(make_scorer(checkpoint, scores, **options), checkpoint.tokenizer, boundaries, long_audio)``."""
        return cls(make_scorer(checkpoint, scores, **options), checkpoint.tokenizer, boundaries,
                   options.get("long_audio"))

    def settings(self) -> Dict[str, Any]:
        """Everything that determines the alignments (recorded with the results)."""
        settings = self.scorer.settings()
        if self.boundaries != "viterbi":  # (absent from the settings of runs from before the option)
            settings["boundaries"] = self.boundaries
        return settings

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
        expected, by_segments = None, False
        if self.boundaries == "expected":  # over a long recording, stretch by stretch (O(frames × states))
            by_segments = any(self.long_audio.is_long(batch.durations[b]) for b in keep)
            if not by_segments:
                expected = matrix.expected_boundaries()
        for k, (b, ali) in enumerate(zip(keep, matrix.best_paths(on_infeasible="skip"))):
            cut_id, duration = batch.cut_ids[b], batch.durations[b]
            if ali is None:
                out[cut_id] = AlignResult(cut_id, duration, error=failure_reason(
                    "too short", f"{int(matrix.lengths[k])} frames of {matrix.frame_step_s * 1000:g} ms, "
                                 f"the transcript needs {int(matrix.min_frames[k])}"))
            else:
                written = batch.written[b] if batch.written else None
                frames = None  # the best path's frame edges
                if by_segments:
                    frames = expected_boundaries_by_segments(matrix, k, ali)
                elif expected is not None:
                    frames = (expected[0][k].tolist(), expected[1][k].tolist())
                out[cut_id] = AlignResult(cut_id, duration, self.times(matrix, cut_id, duration, batch.words[b],
                                                                       batch.transcripts[b], ali, written, row=k,
                                                                       frames=frames))
        return out

    def times(self, matrix: ScoreMatrix, cut_id: str, duration: Seconds, words: List[str],
              transcript: List[List[int]], ali: Alignment, written=None, row: Optional[int] = None,
              frames: Optional[Tuple[List[float], List[float]]] = None) -> UtteranceTimes:
        """Seconds of the word and token spans of ``ali`` (clipped to [0, ``duration``]), with their confidences.

        Every word and token span gets its confidence (:mod:`fsalign.results.confidence`) from
        utterance ``row`` of ``matrix`` (None: the matrix holds this utterance only). With
        ``frames`` (the start and end frame of every transcript position, e.g. the expected
        boundaries), spans get those times instead of the frame edges of ``ali``: a token its
        position's, a word from its first token's start to its last token's end (the
        confidences stay those of the best path's frames). With
        ``written`` (the cut's :class:`~fsalign.corpus.normalize.WrittenWord` s), every written
        token that became spoken words spans from the start of its first word to the end of its
        last (``UtteranceTimes.written``), with the lowest confidence of those words; a token that
        says nothing (a dash) gets no time.
        """
        if row is None:
            if len(matrix) != 1:
                raise ValueError(f"times of {cut_id}: the matrix holds {len(matrix)} utterances, pass its row")
            row = 0
        probs = matrix.frame_confidences(row, ali.labels)
        non_token = matrix.graphs.topology.non_token_labels

        def spans(labels: List[str], path_spans) -> List[TimedSpan]:
            scores = span_confidences(probs, ali.labels, path_spans, non_token)
            return [span(label, p, score) for label, p, score in zip(labels, path_spans, scores)]

        def span(label: str, path_span, score: Optional[float] = None) -> TimedSpan:
            if frames is not None and isinstance(path_span, WordSpan):
                start, end = (matrix.frame_seconds(frames[0][path_span.first_token]),
                              matrix.frame_seconds(frames[1][path_span.last_token]))
            elif frames is not None and isinstance(path_span, TokenSpan):
                start, end = (matrix.frame_seconds(f[path_span.position]) for f in frames)
            else:  # frame edges of the best path (garbage spans always)
                start, end = matrix.seconds(path_span)
            return TimedSpan(label, round(min(start, duration), 9), round(min(end, duration), 9), score)

        split_otherwise = len(words) != len(transcript)
        if split_otherwise:  # a tokenizer that splits differently: name words by their tokens
            words = [self.tokenizer.decode([w]).replace(" ", "_") for w in transcript]
        names = self.tokenizer.token_names
        word_spans = spans([words[w.index] for w in ali.words], ali.words)
        by_index = {w.index: s for w, s in zip(ali.words, word_spans)}  # without the skipped words
        written_spans = []
        if written and not split_otherwise:
            k = 0
            for token in written:
                inside = [by_index[i] for i in range(k, k + len(token.spoken)) if i in by_index]
                if inside:
                    written_spans.append(TimedSpan(token.text, inside[0].start, inside[-1].end,
                                                   written_confidence([s.score for s in inside])))
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
        return UtteranceTimes(cut_id, duration, word_spans, spans([names[t.token] for t in ali.tokens], ali.tokens),
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
