"""Lhotse cuts -> training/alignment batches.

:class:`CutDataset` turns the :class:`~lhotse.CutSet` a lhotse sampler yields into a
:class:`Batch`: padded log-mel features, their lengths, word-structured token
transcripts (via a :mod:`fsalign.corpus.tokenizers` tokenizer), cut ids and the reference word
alignments the supervisions carry. :func:`make_dataloader` wires it to lhotse's
samplers, which shard by rank under DDP.

Dimension symbols:
  B: cuts in the batch.
  T': feature frames (10 ms shift) of the longest cut, before any model subsampling.
  F: feature dimension (80 log-mel filterbank energies by default).
"""
import inspect
import itertools
import logging
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from lhotse import CutSet, Fbank, FbankConfig
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.features import FeatureExtractor

from fsalign.corpus.normalize import WrittenWord, normalize
from fsalign.corpus.recordings import (  # noqa: F401  (lhotse reads mono downmixes with ChannelMeanDownmix)
    FEATURE_CHUNK_S,
    ChannelMeanDownmix,
    chunked_features,
)
from fsalign.corpus.tokenizers import Tokenizer
from fsalign.errors import FsalignError
from fsalign.results.manifests import ALIGNMENT_KINDS, cut_spans
from fsalign.results.times import TimedSpan
from fsalign.util import Pathlike, Seconds

__all__ = ["Batch", "CutDataset", "SimpleSampler", "BucketingSampler", "FAILURE_KINDS", "failure_reason",
           "make_dataloader", "default_extractor", "reference_words", "cut_text"]

logger = logging.getLogger(__name__)

FRAME_SHIFT_S: Seconds = 0.01
SAMPLING_RATE = 16000
NUM_MEL_BINS = 80


# torch < 2 has ``Sampler.__init__(self, data_source)`` with no default; lhotse >= 1.32.1
# calls ``super().__init__()`` without it. The shim sits between lhotse's CutSampler and
# torch's Sampler in the MRO and supplies the argument only where torch requires it.
_DATA_SOURCE = inspect.signature(torch.utils.data.Sampler.__init__).parameters.get("data_source")
_NEEDS_DATA_SOURCE = _DATA_SOURCE is not None and _DATA_SOURCE.default is inspect.Parameter.empty


class _SamplerInitShim(torch.utils.data.Sampler):
    def __init__(self, data_source=None):
        if _NEEDS_DATA_SOURCE:
            super().__init__(data_source)
        else:
            super().__init__()


class BucketingSampler(DynamicBucketingSampler, _SamplerInitShim):
    """lhotse's ``DynamicBucketingSampler``, constructible on torch 1.13 too (same arguments)."""


class SimpleSampler(SimpleCutSampler, _SamplerInitShim):
    """lhotse's ``SimpleCutSampler``, constructible on torch 1.13 too (same arguments)."""


def default_extractor() -> Fbank:
    """The feature extractor preparation and on-the-fly loading share: 80-dim fbank, 10 ms shift."""
    return Fbank(FbankConfig(num_filters=NUM_MEL_BINS, frame_shift=FRAME_SHIFT_S, sampling_rate=SAMPLING_RATE))


FAILURE_KINDS = ("no transcript", "unknown units", "unreadable audio", "missing features", "bad features")
"""Why a cut could not be used; every failure reason starts with one of these."""
_MAX_REASON = 300  # characters of a failure reason


def failure_reason(kind: str, detail: object = "") -> str:
    """``"<kind>: <detail>"`` on one line, the detail shortened to a few hundred characters."""
    text = " ".join(str(detail).split())
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return f"{kind}: {text}" if text else kind


@dataclass
class Batch:
    """One batch of cuts, for training or aligning.

    Attributes:
      features: Tensor of shape (B, T', F), float32, zero beyond each cut's length.
      feature_lengths: Tensor of shape (B,), int64 frames of each cut.
      transcripts: token ids per word per cut (``list[list[list[int]]]``), as
        ``Topology.compile`` takes them.
      texts: transcript strings, as written.
      cut_ids: lhotse cut ids of the B cuts.
      durations: their durations in seconds.
      words: per cut, its spoken words (:func:`fsalign.corpus.normalize.normalize`: one per
        transcript word, in the transcripts' order).
      written: per cut, its written tokens, each with the spoken words it became.
      word_alignments: per cut, the reference word spans (relative to the cut start, silence
        dropped; :func:`reference_words`) or None if the supervisions have none.
      failed: cut id -> reason (:func:`failure_reason`), for the cuts of this batch that
        could not be used (they are not among the B).
      order: every cut of the batch, used or failed, as (cut id, duration), in batch order.
      frame_shift_s: seconds per feature frame.
    """

    features: torch.Tensor
    feature_lengths: torch.Tensor
    transcripts: List[List[List[int]]]
    texts: List[str]
    cut_ids: List[str]
    durations: List[Seconds] = field(default_factory=list)
    words: List[List[str]] = field(default_factory=list)
    written: List[List[WrittenWord]] = field(default_factory=list)
    word_alignments: List[Optional[List[TimedSpan]]] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    order: List[Tuple[str, Seconds]] = field(default_factory=list)
    frame_shift_s: Seconds = FRAME_SHIFT_S

    def __len__(self) -> int:
        return len(self.cut_ids)

    @property
    def skipped(self) -> Dict[str, str]:
        """The same as :attr:`failed` (the cuts left out of the batch, with reasons)."""
        return self.failed

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        """Copy with the tensors moved to ``device``."""
        return replace(
            self,
            features=self.features.to(device, non_blocking=non_blocking),
            feature_lengths=self.feature_lengths.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "Batch":
        """Copy with the tensors in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return replace(self, features=self.features.pin_memory(), feature_lengths=self.feature_lengths.pin_memory())

    def select(self, indices: Sequence[int]) -> "Batch":
        """The cuts ``indices`` only (features trimmed to the longest of them), nothing failed."""
        idx = list(indices)
        lengths = self.feature_lengths[idx]
        longest = int(lengths.max()) if idx else 0

        def pick(items):
            return [items[i] for i in idx] if items else items

        return Batch(self.features[idx, :longest], lengths, pick(self.transcripts), pick(self.texts),
                     pick(self.cut_ids), pick(self.durations), pick(self.words), pick(self.written),
                     pick(self.word_alignments), {}, [(self.cut_ids[i], self.durations[i]) for i in idx],
                     self.frame_shift_s)


def cut_text(cut: Cut) -> str:
    """Transcript of a cut: its supervisions' texts in time order, joined by spaces."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    return " ".join(s.text.strip() for s in sups if s.text and s.text.strip())


def reference_words(cut: Cut) -> Optional[List[TimedSpan]]:
    """Reference word spans of a cut (relative to the cut start, silence dropped), or None.

    Lhotse stores alignment times relative to the recording;
    :func:`fsalign.results.manifests.cut_spans` converts them.
    """
    return cut_spans(cut, ALIGNMENT_KINDS["word"])


class CutDataset(torch.utils.data.Dataset):
    """Map-style dataset whose index is a :class:`~lhotse.CutSet` from a lhotse sampler.

    Features come from ``cut.load_features()`` when the cut has precomputed ones, else
    they are computed on the fly with ``extractor`` (resampled to its rate first; a cut longer
    than :data:`~fsalign.corpus.recordings.FEATURE_CHUNK_S` a minute at a time, the same values
    in bounded memory: :func:`~fsalign.corpus.recordings.chunked_features`).

    Args:
      tokenizer: turns each cut's text into word-structured token ids.
      extractor: on-the-fly feature extractor (default :func:`default_extractor`).
      on_error: ``"raise"`` (training): a text the tokenizer cannot encode with
        ``oov="error"``, or features that cannot be read, raise an FsalignError naming the
        cut(s); with ``oov="skip"`` such a cut is left out and listed in ``Batch.failed``.
        ``"report"`` (aligning): every cut that cannot be used is listed in ``Batch.failed``
        with its reason and the others load.
      sort: order each batch by decreasing duration (as lhotse's samplers expect for
        training); alignment batches keep their order.
    """

    def __init__(self, tokenizer: Tokenizer, extractor: Optional[FeatureExtractor] = None, on_error: str = "raise",
                 sort: bool = True):
        if on_error not in ("raise", "report"):
            raise ValueError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        self.tokenizer = tokenizer
        self.extractor = extractor if extractor is not None else default_extractor()
        self.num_features = self.extractor.feature_dim(SAMPLING_RATE)
        self.on_error = on_error
        self.sort = sort

    def features(self, cut: Cut) -> torch.Tensor:
        """Features of one cut.

        Returns:
          Tensor of shape (T', F), float32.

        Raises:
          FsalignError: starting with the failure kind ("missing features", "unreadable audio",
            "bad features") and naming the cut.
        """
        try:
            if cut.has_features:
                kind = "missing features"
                feats = cut.load_features()
            else:
                kind = "unreadable audio"
                if cut.sampling_rate != self.extractor.config.sampling_rate:
                    cut = cut.resample(self.extractor.config.sampling_rate)
                if cut.duration > FEATURE_CHUNK_S:  # a long recording: its features piece by piece
                    feats = chunked_features(cut.load_audio(), cut.sampling_rate, self.extractor)
                else:
                    feats = cut.compute_features(self.extractor)
        except Exception as e:
            raise FsalignError(failure_reason(kind, f"cut {cut.id}: {e}")) from e
        feats = torch.as_tensor(feats, dtype=torch.float32)
        if feats.ndim != 2 or feats.shape[1] != self.num_features or feats.shape[0] == 0:
            raise FsalignError(failure_reason(
                "bad features",
                f"cut {cut.id}: expected shape (T' > 0, {self.num_features}), got {tuple(feats.shape)}"))
        return feats

    def _transcript(self, cut: Cut) -> Tuple[str, List[WrittenWord], Optional[List[List[int]]], Optional[str]]:
        """(text, written words, token ids, failure reason): ids None and a reason when the cut cannot be used.

        The tokenizer encodes the spoken words of the text (:func:`fsalign.corpus.normalize.normalize`).
        """
        text = cut_text(cut)
        written = normalize(text)
        spoken = " ".join(w for token in written for w in token.spoken)
        if not spoken:
            detail = f"cut {cut.id} has no supervision text" if not text else f"cut {cut.id}: no word in {text!r}"
            return text, written, None, failure_reason("no transcript", detail)
        try:
            ids = self.tokenizer.encode(spoken)
        except FsalignError as e:
            if self.on_error == "raise":
                raise FsalignError(f"cut {cut.id}: {e}") from None
            return text, written, None, failure_reason("unknown units", e)
        if ids is None:
            bad = self.tokenizer.find_oov(spoken)
            return text, written, None, failure_reason(
                "unknown units", f"the {self.tokenizer.unit} tokenizer cannot encode {bad[:10]} in {text!r}")
        return text, written, ids, None

    def __getitem__(self, cuts: CutSet) -> Batch:
        if self.sort:
            cuts = cuts.sort_by_duration(ascending=False)
        kept, feats, transcripts, texts, written, failed, order = [], [], [], [], [], {}, []
        for cut in cuts:
            order.append((cut.id, float(cut.duration)))
            text, words, ids, reason = self._transcript(cut)
            if reason is None:
                try:
                    feats.append(self.features(cut))
                except FsalignError as e:
                    if self.on_error == "raise":
                        raise
                    reason = str(e)
            if reason is not None:
                failed[cut.id] = reason
                if self.on_error == "raise":
                    logger.warning("skipping cut %s: %s", cut.id, reason)
                continue
            kept.append(cut)
            transcripts.append(ids)
            texts.append(text)
            written.append(words)
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        padded = (torch.nn.utils.rnn.pad_sequence(feats, batch_first=True) if feats
                  else torch.zeros(0, 0, self.num_features))
        return Batch(
            features=padded,
            feature_lengths=lengths,
            transcripts=transcripts,
            texts=texts,
            cut_ids=[cut.id for cut in kept],
            durations=[float(cut.duration) for cut in kept],
            words=[[w for token in ws for w in token.spoken] for ws in written],
            written=written,
            word_alignments=[reference_words(cut) for cut in kept],
            failed=failed,
            order=order,
            frame_shift_s=self.extractor.frame_shift,
        )


def make_dataloader(
    cuts: Union[CutSet, Pathlike],
    tokenizer: Tokenizer,
    max_duration: Seconds,
    shuffle: bool = False,
    num_workers: int = 0,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    bucketing: bool = True,
    num_buckets: int = 10,
    drop_last: bool = False,
    seed: int = 0,
    extractor: Optional[FeatureExtractor] = None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of :class:`Batch` es drawn by a lhotse sampler.

    Under DDP each rank gets its own shard: lhotse's samplers read ``rank`` and
    ``world_size`` from ``torch.distributed`` when it is initialised, or take them here.
    Call ``loader.sampler.set_epoch(epoch)`` before each epoch to reshuffle.

    Caution:
      With ``world_size > 1`` and ``drop_last=False`` lhotse gives every rank the same
      number of batches by repeating cuts, renamed ``<cut id>_dup<k>``; drop those when
      every cut must be seen exactly once (e.g. when writing alignments).

    Args:
      cuts: a CutSet or the path of a cut manifest (read lazily).
      tokenizer: see :class:`CutDataset`.
      max_duration: seconds of audio per batch (per rank).
      shuffle: shuffle cuts (and buckets) every epoch.
      num_workers: DataLoader worker processes (features are loaded/computed in them).
      rank: this process's rank; None reads it from ``torch.distributed`` (or 0).
      world_size: number of ranks; None reads it from ``torch.distributed`` (or 1).
      bucketing: ``DynamicBucketingSampler`` (cuts of similar duration batched
        together) if True, else ``SimpleCutSampler``.
      num_buckets: buckets of the bucketing sampler (fewer if there are fewer cuts;
        ``SimpleCutSampler`` for a single cut).
      drop_last: drop the last incomplete batch.
      seed: shuffling seed.
      extractor: on-the-fly feature extractor for cuts without features.
      pin_memory: return batches in pinned memory (faster ``batch.to(cuda, non_blocking=True)``).

    Returns:
      ``torch.utils.data.DataLoader`` yielding :class:`Batch`.
    """
    if max_duration is None or max_duration <= 0:
        raise ValueError(f"max_duration must be a positive number of seconds, got {max_duration}")
    if not isinstance(cuts, CutSet):
        cuts = CutSet.from_file(cuts)
    # lhotse needs 2 <= num_buckets <= number of cuts; small sets get fewer buckets
    num_buckets = min(num_buckets, sum(1 for _ in itertools.islice(cuts, num_buckets)))
    if bucketing and num_buckets >= 2:
        sampler = BucketingSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, num_buckets=num_buckets,
            drop_last=drop_last, rank=rank, world_size=world_size, seed=seed,
        )  # fmt: skip
    else:
        sampler = SimpleSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, drop_last=drop_last,
            rank=rank, world_size=world_size, seed=seed,
        )  # fmt: skip
    return torch.utils.data.DataLoader(
        CutDataset(tokenizer, extractor),
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
