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
from typing import Dict, List, Optional, Union

import torch
from lhotse import CutSet, Fbank, FbankConfig
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.features import FeatureExtractor
from lhotse.supervision import AlignmentItem

from fsalign.corpus.tokenizers import Tokenizer
from fsalign.errors import FsalignError
from fsalign.util import Pathlike, Seconds

__all__ = ["Batch", "CutDataset", "make_dataloader", "default_extractor", "reference_words", "cut_text"]

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


class _DynamicBucketingSampler(DynamicBucketingSampler, _SamplerInitShim):
    """lhotse's ``DynamicBucketingSampler``, constructible on torch 1.13 too."""


class _SimpleCutSampler(SimpleCutSampler, _SamplerInitShim):
    """lhotse's ``SimpleCutSampler``, constructible on torch 1.13 too."""


def default_extractor() -> Fbank:
    """The feature extractor preparation and on-the-fly loading share: 80-dim fbank, 10 ms shift."""
    return Fbank(FbankConfig(num_filters=NUM_MEL_BINS, frame_shift=FRAME_SHIFT_S, sampling_rate=SAMPLING_RATE))


@dataclass
class Batch:
    """One batch of cuts, ordered by decreasing duration.

    Attributes:
      features: Tensor of shape (B, T', F), float32, zero beyond each cut's length.
      feature_lengths: Tensor of shape (B,), int64 frames of each cut.
      transcripts: token ids per word per cut (``list[list[list[int]]]``), as
        ``Topology.compile`` takes them.
      texts: transcript strings.
      cut_ids: lhotse cut ids.
      word_alignments: per cut, the reference words (``AlignmentItem`` with ``start``
        relative to the cut start, silence items removed) or None if the supervision
        has no ``alignment["word"]``.
      skipped: cut id -> reason, for cuts left out of the batch (tokenizer ``oov="skip"``).
      frame_shift_s: seconds per feature frame.
    """

    features: torch.Tensor
    feature_lengths: torch.Tensor
    transcripts: List[List[List[int]]]
    texts: List[str]
    cut_ids: List[str]
    word_alignments: List[Optional[List[AlignmentItem]]]
    skipped: Dict[str, str] = field(default_factory=dict)
    frame_shift_s: Seconds = FRAME_SHIFT_S

    def __len__(self) -> int:
        return len(self.cut_ids)

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


def cut_text(cut: Cut) -> str:
    """Transcript of a cut: its supervisions' texts in time order, joined by spaces."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    return " ".join(s.text.strip() for s in sups if s.text and s.text.strip())


def reference_words(cut: Cut) -> Optional[List[AlignmentItem]]:
    """Reference word alignment of a cut, or None if a supervision has none.

    Lhotse stores alignment times relative to the recording; they are shifted here to be
    relative to the cut start. Items with an empty symbol (silence in the LibriSpeech
    alignment format) are dropped.

    Returns:
      ``AlignmentItem(symbol, start, duration)`` per word in time order, or None.
    """
    if not cut.supervisions or any(not s.alignment or "word" not in s.alignment for s in cut.supervisions):
        return None
    items = [item for s in cut.supervisions for item in s.alignment["word"] if item.symbol.strip()]
    items = [item._replace(start=round(item.start - cut.start, 8)) for item in items]
    return sorted(items, key=lambda item: item.start)


class CutDataset(torch.utils.data.Dataset):
    """Map-style dataset whose index is a :class:`~lhotse.CutSet` from a lhotse sampler.

    Features come from ``cut.load_features()`` when the cut has precomputed ones, else
    they are computed on the fly with ``extractor``.

    Args:
      tokenizer: turns each cut's text into word-structured token ids. With
        ``tokenizer.oov == "error"`` a text it cannot encode raises; with ``"skip"``
        the cut is left out of the batch and listed in ``Batch.skipped`` (and logged).
      extractor: on-the-fly feature extractor (default :func:`default_extractor`).

    Raises (from ``__getitem__``):
      FsalignError: naming the cut id(s): untokenizable text (``oov="error"``), features
        that cannot be loaded or computed, or features of the wrong dimension.
    """

    def __init__(self, tokenizer: Tokenizer, extractor: Optional[FeatureExtractor] = None):
        self.tokenizer = tokenizer
        self.extractor = extractor if extractor is not None else default_extractor()
        self.num_features = self.extractor.feature_dim(SAMPLING_RATE)

    def features(self, cut: Cut) -> torch.Tensor:
        """Features of one cut.

        Returns:
          Tensor of shape (T', F), float32.
        """
        try:
            if cut.has_features:
                feats = cut.load_features()
            else:
                if cut.sampling_rate != self.extractor.config.sampling_rate:
                    cut = cut.resample(self.extractor.config.sampling_rate)
                feats = cut.compute_features(self.extractor)
        except Exception as e:
            raise FsalignError(f"cut {cut.id}: could not load or compute features: {e}") from e
        feats = torch.as_tensor(feats, dtype=torch.float32)
        if feats.ndim != 2 or feats.shape[1] != self.num_features:
            raise FsalignError(
                f"cut {cut.id}: expected features of shape (T', {self.num_features}), got {tuple(feats.shape)}"
            )
        return feats

    def __getitem__(self, cuts: CutSet) -> Batch:
        cuts = cuts.sort_by_duration(ascending=False)
        kept, transcripts, texts, skipped, failed = [], [], [], {}, []
        for cut in cuts:
            text = cut_text(cut)
            try:
                ids = self.tokenizer.encode(text)
            except FsalignError as e:
                failed.append(f"cut {cut.id}: {e}")
                continue
            if ids is None:
                bad = self.tokenizer.find_oov(text)
                skipped[cut.id] = f"cannot encode {text!r} with the {self.tokenizer.unit} tokenizer: out of vocabulary {bad}"
                continue
            kept.append(cut)
            transcripts.append(ids)
            texts.append(text)
        if failed:
            raise FsalignError(f"{len(failed)} cut(s) in this batch cannot be tokenized:\n" + "\n".join(failed))
        for cut_id, reason in skipped.items():
            logger.warning("skipping cut %s: %s", cut_id, reason)
        feats = [self.features(cut) for cut in kept]
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        if feats:
            padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        else:
            padded = torch.zeros(0, 0, self.num_features)
        return Batch(
            features=padded,
            feature_lengths=lengths,
            transcripts=transcripts,
            texts=texts,
            cut_ids=[cut.id for cut in kept],
            word_alignments=[reference_words(cut) for cut in kept],
            skipped=skipped,
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
        sampler = _DynamicBucketingSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, num_buckets=num_buckets,
            drop_last=drop_last, rank=rank, world_size=world_size, seed=seed,
        )  # fmt: skip
    else:
        sampler = _SimpleCutSampler(
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
