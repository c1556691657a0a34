"""Aligning a corpus: a trained checkpoint + lhotse cuts -> word and token times per utterance.

* :class:`AlignDataset` loads a batch of cuts (features precomputed or computed on the fly,
  transcripts tokenized) and sets aside, with a reason, every cut it cannot use;
* :func:`plan_batches` splits a cut manifest into deterministic batches: windows of
  ``window`` consecutive cuts, each sorted by duration and cut into batches of at most
  ``max_duration`` seconds by lhotse's ``SimpleCutSampler``; a shard ``i/n`` is a
  contiguous range of windows, so sharded runs compute exactly the batches of an
  unsharded one and their outputs concatenate in cut order;
* :class:`Aligner` aligns one batch with posterior scores (Viterbi under a topology, with
  prior scale, blank penalty and the training scales, eq. 6 and Table 14) or gradient
  scores (GradScore / GradScoreExt at the 10 ms feature rate, section 5), and turns the
  best paths into :class:`~fsalign.results.formats.UtteranceTimes`. A batch that fails as a whole
  is retried one utterance at a time, so one bad utterance costs only itself;
* :func:`align_cuts` runs the plan through a DataLoader and yields the
  :class:`AlignResult` s of each batch.

Times: a frame ``f`` of the score matrix starts at ``f * step + offset`` seconds with
``step`` the feature shift times the model's subsampling (posteriors) or the feature
shift (gradient scores), and ``offset`` that of :func:`fsalign.results.alignment.frame_time_offset`
(posteriors: -(subsampling - 1) / 2 feature frames, so that each encoder frame's span is
centred on the feature frame its frontend centres it on; gradient scores: 0). A word
starts at the first frame of its first token and ends at the end of the last frame of its
last token (paper, section 5); times are clipped to [0, duration of the cut].

Dimension symbols:
  B: cuts in a batch.
  T': feature frames (10 ms).
  T: encoder frames (T' / subsampling).
  F: feature dimension.
  C: output columns.
  S: transcript tokens.
"""
import itertools
import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import torch
from lhotse import CutSet
from lhotse.cut import Cut

from fsalign.checkpoint import LoadedCheckpoint
from fsalign.corpus.cuts import CutDataset, _SimpleCutSampler, cut_text
from fsalign.corpus.tokenizers import Tokenizer, normalize_words
from fsalign.engine.builtin import TOPOLOGIES, make_topology
from fsalign.engine.viterbi import viterbi_align
from fsalign.errors import FsalignError
from fsalign.results.alignment import Alignment, TokenSpan, WordSpan, frame_time_offset
from fsalign.results.formats import TimedSpan, UtteranceTimes
from fsalign.scores.gradient import gradient_scores
from fsalign.scores.gradscore import grad_align
from fsalign.scores.posterior import apply_blank_penalty
from fsalign.util import Seconds, valid_frame_mask

__all__ = ["SCORES", "AlignResult", "CutBatch", "AlignDataset", "Aligner", "plan_batches", "shard_range",
           "shard_windows", "parse_shard", "align_cuts"]

logger = logging.getLogger(__name__)

SCORES = ("posterior", "grad", "gradext")
_MAX_REASON = 300  # characters of an error message kept in a failure reason


def _reason(kind: str, detail: object = "") -> str:
    text = " ".join(str(detail).split())
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return f"{kind}: {text}" if text else kind


@dataclass
class AlignResult:
    """The outcome for one cut.

    Attributes:
      cut_id: the cut.
      duration: its duration in seconds.
      times: word and token times, or None if it failed.
      error: why it failed ("<kind>: <detail>"), or None.
    """

    cut_id: str
    duration: Seconds
    times: Optional[UtteranceTimes] = None
    error: Optional[str] = None


@dataclass
class CutBatch:
    """Cuts ready to align, plus the ones of the same batch that could not be loaded.

    Attributes:
      features: Tensor of shape (B, T', F), zero-padded.
      feature_lengths: Tensor of shape (B,), int64.
      transcripts: token ids per word per cut.
      words: the transcript words (upper case) per cut.
      cut_ids: ids of the B loadable cuts.
      durations: their durations in seconds.
      failed: results of the cuts that could not be loaded (audio, features, transcript).
      order: every cut id of the batch, loadable or not, in batch order.
      frame_shift_s: seconds per feature frame.
    """

    features: torch.Tensor
    feature_lengths: torch.Tensor
    transcripts: List[List[List[int]]]
    words: List[List[str]]
    cut_ids: List[str]
    durations: List[Seconds]
    failed: Dict[str, AlignResult] = field(default_factory=dict)
    order: List[str] = field(default_factory=list)
    frame_shift_s: Seconds = 0.01

    def __len__(self) -> int:
        return len(self.cut_ids)

    def select(self, indices: Sequence[int]) -> "CutBatch":
        """The loadable cuts ``indices`` only (features trimmed to their longest), nothing failed."""
        idx = list(indices)
        lengths = self.feature_lengths[idx]
        longest = int(lengths.max()) if idx else 0
        return CutBatch(self.features[idx, :longest], lengths, [self.transcripts[i] for i in idx],
                        [self.words[i] for i in idx], [self.cut_ids[i] for i in idx],
                        [self.durations[i] for i in idx], {}, [self.cut_ids[i] for i in idx], self.frame_shift_s)

    def pin_memory(self) -> "CutBatch":
        """Copy with the tensors in pinned memory (``DataLoader(pin_memory=True)``)."""
        return replace(self, features=self.features.pin_memory(), feature_lengths=self.feature_lengths.pin_memory())


class AlignDataset(torch.utils.data.Dataset):
    """Map-style dataset: a :class:`~lhotse.CutSet` (one batch from the plan) -> :class:`CutBatch`.

    Every cut is loaded on its own, so a cut whose transcript has units the tokenizer does
    not know, or whose audio/features cannot be read, is reported in ``CutBatch.failed``
    while the others load.

    Args:
      tokenizer: the checkpoint's tokenizer.
      extractor: on-the-fly features for cuts without precomputed ones (default: the
        training fbank, :func:`fsalign.corpus.cuts.default_extractor`).
    """

    def __init__(self, tokenizer: Tokenizer, extractor=None):
        self.tokenizer = tokenizer
        self.loader = CutDataset(tokenizer, extractor)

    def __getitem__(self, cuts: CutSet) -> CutBatch:
        feats, transcripts, words, ids, durations, failed, order = [], [], [], [], [], {}, []
        for cut in cuts:
            order.append(cut.id)
            result = self._load(cut)
            if isinstance(result, AlignResult):
                failed[cut.id] = result
                continue
            feats.append(result[0])
            transcripts.append(result[1])
            words.append(result[2])
            ids.append(cut.id)
            durations.append(float(cut.duration))
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        if feats:
            padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        else:
            padded = torch.zeros(0, 0, self.loader.num_features)
        return CutBatch(padded, lengths, transcripts, words, ids, durations, failed, order,
                        self.loader.extractor.frame_shift)

    def _load(self, cut: Cut) -> Union[AlignResult, Tuple[torch.Tensor, List[List[int]], List[str]]]:
        duration = float(cut.duration)
        try:
            text = cut_text(cut)
            unknown = self.tokenizer.find_oov(text)
            if unknown:
                return AlignResult(cut.id, duration, error=_reason(
                    "unknown units", f"the {self.tokenizer.unit} tokenizer cannot encode {unknown[:10]}"))
            ids = self.tokenizer.encode(text)
        except Exception as e:  # a tokenizer error names the text
            return AlignResult(cut.id, duration, error=_reason("unknown units", e))
        try:
            feats = self.loader.features(cut)
        except Exception as e:
            cause = e.__cause__ if e.__cause__ is not None else e
            return AlignResult(cut.id, duration, error=_reason("unreadable audio", cause))
        if feats.shape[0] == 0:
            return AlignResult(cut.id, duration, error=_reason("unreadable audio", "no feature frames"))
        return feats, ids, normalize_words(text)


def parse_shard(spec: str) -> Tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; raises FsalignError otherwise."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise FsalignError(f"shard must be 'i/n' with integers 0 <= i < n, got {spec!r}") from None
    if not 0 <= i < n:
        raise FsalignError(f"shard must be 'i/n' with integers 0 <= i < n, got {spec!r}")
    return i, n


def shard_range(num_cuts: int, window: int, shard: Tuple[int, int]) -> Tuple[int, int]:
    """Cut indices ``[lo, hi)`` of shard ``(i, n)``: windows ``[i K / n, (i+1) K / n)`` of the
    ``K = ceil(num_cuts / window)`` windows (integer division)."""
    i, n = shard
    windows = -(-num_cuts // window)
    return min(num_cuts, i * windows // n * window), min(num_cuts, (i + 1) * windows // n * window)


def shard_windows(cuts: Iterable[Cut], window: int, shard: Tuple[int, int] = (0, 1),
                  num_cuts: Optional[int] = None) -> Iterator[CutSet]:
    """The windows of ``window`` consecutive cuts that belong to ``shard``, in manifest order.

    Shard ``i/n`` gets the cuts of :func:`shard_range`: the shards partition the manifest
    into contiguous ranges of whole windows.

    Args:
      cuts: the manifest (iterated once, lazily).
      window: cuts per window (>= 1).
      shard: ``(i, n)``.
      num_cuts: number of cuts in ``cuts``; needed when ``n > 1``.

    Returns:
      Iterator of eager CutSets.
    """
    if window < 1:
        raise FsalignError(f"window must be >= 1 cut, got {window}")
    lo, hi = 0, math.inf
    if shard[1] > 1:
        if num_cuts is None:
            raise FsalignError("shard_windows needs num_cuts to split into shards")
        lo, hi = shard_range(num_cuts, window, shard)
    it = iter(cuts)
    for start in itertools.count(0, window):
        if start >= hi:
            return
        chunk = list(itertools.islice(it, window))
        if not chunk:
            return
        if start >= lo:
            yield CutSet.from_cuts(chunk)


def plan_batches(windows: Iterable[CutSet], max_duration: Seconds) -> Iterator[CutSet]:
    """Batches of every window: its cuts sorted by decreasing duration (ties by id), cut by
    lhotse's ``SimpleCutSampler`` into batches of at most ``max_duration`` seconds (a longer
    cut is a batch of its own); ``max_duration=0``: every cut its own batch."""
    if not max_duration >= 0:
        raise FsalignError(f"batch duration must be >= 0 seconds, got {max_duration}")
    for cuts in windows:
        ordered = CutSet.from_cuts(sorted(cuts, key=lambda c: (-c.duration, c.id)))
        if max_duration == 0:
            yield from (CutSet.from_cuts([cut]) for cut in ordered)
            continue
        sampler = _SimpleCutSampler(ordered, max_duration=max_duration, shuffle=False, drop_last=False,
                                    rank=0, world_size=1)
        with warnings.catch_warnings():  # "a cut exceeds max_duration": it is batched alone, as wanted
            warnings.simplefilter("ignore")
            yield from sampler


class Aligner:
    """Aligns :class:`CutBatch` es with a loaded checkpoint.

    Args:
      checkpoint: from :func:`fsalign.checkpoint.load_checkpoint` (model on its device).
      scores: "posterior" (Viterbi on the model's posteriors), "grad" (GradScore) or
        "gradext" (GradScoreExt).
      topology: "ctc", "hmm" or "relaxed" for posterior alignment; None: the training topology.
      prior_scale: β; needs the checkpoint's corpus prior when > 0.
      blank_penalty: added to the blank/silence log-probability before renormalising (Table 14).
      posterior_scale: α; None: the training criterion's (with the training topology), else 1.
      transition_scale: γ; None: as ``posterior_scale``.
      grad_p: p of the gradient norm (eq. 22).
      grad_chunk_size: label positions per batched gradient (bounds memory; None: all).
      grad_blank_score: γ_ε of GradScore.
      grad_percentile: γ_percentile of GradScoreExt.
      grad_prefix: CTC prefix score of G, ``"onset"`` or ``"forward"`` (see
        :func:`fsalign.scores.prefix.ctc_prefix_log_probs`).
    """

    def __init__(self, checkpoint: LoadedCheckpoint, scores: str = "posterior", topology: Optional[str] = None,
                 prior_scale: float = 0.0, blank_penalty: float = 0.0, posterior_scale: Optional[float] = None,
                 transition_scale: Optional[float] = None, grad_p: float = 0.1, grad_chunk_size: Optional[int] = 32,
                 grad_blank_score: float = -6.0, grad_percentile: float = 60.0, grad_prefix: str = "forward"):
        if scores not in SCORES:
            raise FsalignError(f"scores must be one of {SCORES}, got {scores!r}")
        self.model, self.tokenizer, trained, self.metadata = checkpoint
        self.model.eval()
        self.scores = scores
        self.device = next(self.model.parameters()).device
        trained_kind = (self.metadata.get("topology") or {}).get("kind")
        if topology is not None and topology not in TOPOLOGIES:
            raise FsalignError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
        self.topology_kind = topology or trained_kind
        same = topology is None or topology == trained_kind
        self.topology = trained if same else make_topology(topology, self.tokenizer.num_labels)
        criterion = (self.metadata.get("criterion") or {}) if same else {}
        self.posterior_scale = float(criterion.get("posterior_scale", 1.0) if posterior_scale is None
                                     else posterior_scale)
        self.transition_scale = float(criterion.get("transition_scale", 1.0) if transition_scale is None
                                      else transition_scale)
        self.prior_scale = float(prior_scale)
        self.blank_penalty = float(blank_penalty)
        self.log_prior = None
        if self.prior_scale:
            self.log_prior = self.metadata.get("corpus_prior")
            if self.log_prior is None:
                raise FsalignError("--prior-scale needs the corpus prior, and this checkpoint has none "
                                   "(it is stored at the end of training)")
            self.log_prior = self.log_prior.to(self.device)
        self.grad = dict(p=grad_p, chunk_size=grad_chunk_size, blank_score=grad_blank_score,
                         percentile=grad_percentile, prefix=grad_prefix)
        frame_shift = float(self.metadata.get("frame_shift_s", 0.01))
        subsampling = int(self.metadata.get("subsampling", getattr(self.model, "subsampling", 1)))
        self.frame_step_s = frame_shift * subsampling if scores == "posterior" else frame_shift
        self.time_offset_s = frame_time_offset(frame_shift, subsampling if scores == "posterior" else 1)

    def settings(self) -> dict:
        """Everything that determines the alignments (recorded with the results)."""
        common = {"scores": self.scores, "frame_step_s": self.frame_step_s, "time_offset_s": self.time_offset_s}
        if self.scores == "posterior":
            return {**common, "topology": self.topology_kind, "posterior_scale": self.posterior_scale,
                    "transition_scale": self.transition_scale, "prior_scale": self.prior_scale,
                    "blank_penalty": self.blank_penalty}
        return {**common, **self.grad}

    def align(self, batch: CutBatch) -> List[AlignResult]:
        """Results of every cut of the batch (``batch.order``): loaded cuts aligned, the rest failed.

        If aligning the loaded cuts together raises (any error, out-of-memory included),
        each is aligned alone and only the ones that still fail are reported.
        """
        results = dict(batch.failed)
        if len(batch):
            try:
                results.update(self._align(batch))
            except Exception as e:
                if len(batch) == 1:
                    results[batch.cut_ids[0]] = AlignResult(batch.cut_ids[0], batch.durations[0],
                                                            error=_reason("error", e))
                else:
                    logger.warning("batch of %d cuts failed (%s); aligning them one at a time", len(batch), e)
                    for k in range(len(batch)):
                        results.update({r.cut_id: r for r in self.align(batch.select([k]))})
        return [results[cut_id] for cut_id in batch.order]

    def score(self, features: torch.Tensor, feature_lengths: torch.Tensor,
              transcripts: List[List[List[int]]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The score matrices that :meth:`best_paths` aligns, and their valid frames.

        Args:
          features: Tensor of shape (B, T', F) on the model's device.
          feature_lengths: Tensor of shape (B,).
          transcripts: token ids per word per utterance.

        Returns:
          ``(scores, frames)``: posteriors: log posteriors of shape (B, T, C), blank penalty
          applied, no scales; grad/gradext: ``G`` of shape (B, S, T'). ``frames``: Tensor of
          shape (B,), valid frames of each matrix.
        """
        if self.scores == "posterior":
            with torch.no_grad():
                h, frames = self.model.forward_encoder(features, feature_lengths)
                scores = self.model.ctc_log_probs(self.model.ctc_logits(h))
                if self.blank_penalty:
                    scores = apply_blank_penalty(scores, self.model.blank, self.blank_penalty)
            return scores, frames
        scores = gradient_scores(self.model, features, feature_lengths, transcripts, p=self.grad["p"],
                                 chunk_size=self.grad["chunk_size"], prefix=self.grad["prefix"])
        return scores, feature_lengths

    def has_nan(self, scores: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """BoolTensor of shape (B,): the valid part of an utterance's scores holds a NaN."""
        time_dim = 1 if self.scores == "posterior" else 2
        valid = valid_frame_mask(frames, scores.shape[time_dim]).unsqueeze(3 - time_dim)
        return (torch.isnan(scores) & valid).flatten(1).any(1)

    def best_paths(self, scores: torch.Tensor, frames: torch.Tensor, transcripts: List[List[List[int]]]
                   ) -> Tuple[List[Optional[Alignment]], List[int]]:
        """Best paths of :meth:`score`'s matrices (None where an utterance is too short).

        Returns:
          ``(alignments, needed)``: one :class:`Alignment` or None per utterance, and the
          frames each transcript needs.
        """
        if self.scores == "posterior":
            graphs = self.topology.compile(transcripts, device=self.device)
            alignments = viterbi_align(scores, frames, graphs, self.posterior_scale, self.prior_scale,
                                       self.log_prior, self.transition_scale, on_infeasible="skip")
            return alignments, graphs.min_frames.tolist()
        alignments = grad_align(scores, frames, transcripts, variant=self.scores,
                                blank_score=self.grad["blank_score"], percentile=self.grad["percentile"],
                                on_infeasible="skip")
        return alignments, [sum(len(w) for w in t) for t in transcripts]

    def _align(self, batch: CutBatch) -> Dict[str, AlignResult]:
        feats = batch.features.to(self.device)
        lengths = batch.feature_lengths.to(self.device)
        scores, frames = self.score(feats, lengths, batch.transcripts)
        out: Dict[str, AlignResult] = {}
        keep = []
        for b, bad in enumerate(self.has_nan(scores, frames).tolist()):
            if bad:
                out[batch.cut_ids[b]] = AlignResult(batch.cut_ids[b], batch.durations[b],
                                                    error=_reason("NaN scores", "the model's scores contain NaN"))
            else:
                keep.append(b)
        if not keep:
            return out
        index = torch.tensor(keep, device=self.device)
        transcripts = [batch.transcripts[b] for b in keep]
        frames = frames[index]
        alignments, needed = self.best_paths(scores[index], frames, transcripts)
        for k, (b, ali) in enumerate(zip(keep, alignments)):
            cut_id, duration = batch.cut_ids[b], batch.durations[b]
            if ali is None:
                out[cut_id] = AlignResult(cut_id, duration, error=_reason(
                    "too short", f"{int(frames[k])} frames of {self.frame_step_s * 1000:g} ms, "
                                 f"the transcript needs {needed[k]}"))
            else:
                out[cut_id] = AlignResult(cut_id, duration, self.times(cut_id, duration, batch.words[b],
                                                                       transcripts[k], ali))
        return out

    def times(self, cut_id: str, duration: Seconds, words: List[str], transcript: List[List[int]],
              ali: Alignment) -> UtteranceTimes:
        """Seconds of the word and token spans of ``ali`` (clipped to [0, ``duration``])."""

        def span(label: str, frames: Union[TokenSpan, WordSpan]) -> TimedSpan:
            start, end = frames.seconds(self.frame_step_s, offset_s=self.time_offset_s)
            return TimedSpan(label, round(min(start, duration), 9), round(min(end, duration), 9))

        if len(words) != len(transcript):  # a tokenizer that splits differently: name words by their tokens
            words = [self.tokenizer.decode([w]).replace(" ", "_") for w in transcript]
        names = self.tokenizer.token_names
        return UtteranceTimes(
            cut_id, duration,
            [span(words[w.index], w) for w in ali.words],
            [span(names[t.token], t) for t in ali.tokens],
        )  # fmt: skip


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

    Batches are those of :func:`plan_batches` over :func:`shard_windows`, whatever ``done``
    holds: a batch with some cuts done is recomputed whole (the same batch as before, so
    the same numbers) and only its new cuts are yielded.

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
    plan = _Plan(plan_batches(shard_windows(cuts, window, shard, num_cuts), max_duration), done)
    loader = torch.utils.data.DataLoader(
        AlignDataset(aligner.tokenizer, extractor), sampler=plan, batch_size=None, num_workers=num_workers,
        pin_memory=aligner.device.type == "cuda",
    )  # fmt: skip
    for batch in loader:
        yield [result for result in aligner.align(batch) if result.cut_id not in done]
