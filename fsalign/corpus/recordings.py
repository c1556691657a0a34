"""What every corpus layout shares: constants, the loaded corpus, mono recordings, one cut builder.

A multi-channel recording becomes mono lazily: its sources are read whole and averaged by the
:class:`ChannelMeanDownmix` transform (lhotse's ``MultiCut.to_mono(mono_downmix=True)`` decodes the
audio into memory and sums the channels). Reading such cuts back from a manifest needs this module
imported, which registers the transform with lhotse (:mod:`fsalign.corpus.cuts` imports it).
"""
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.augmentation.transform import AudioTransform
from lhotse.utils import fastcopy

from fsalign.errors import FsalignError
from fsalign.util import Pathlike

__all__ = [
    "LAYOUTS", "AUDIO_SUFFIXES", "TRANSCRIPT_SUFFIXES", "MANIFEST_SUFFIXES", "SkippedItem", "LoadedCorpus",
    "ChannelMeanDownmix", "to_mono", "safe_id", "progress_bar", "existing_dir", "is_manifest", "dir_manifests",
    "recording_from_header", "fit_to_audio", "finish_corpus", "FEATURE_CHUNK_S", "chunked_features",
]

logger = logging.getLogger(__name__)
FEATURE_CHUNK_S = 60.0
"""Seconds of audio whose features :func:`chunked_features` computes at once."""
LAYOUTS = ("mfa", "kaldi", "librispeech", "lhotse")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")  # all read by libsndfile through lhotse
TRANSCRIPT_SUFFIXES = (".lab", ".txt", ".textgrid")  # in order of preference; compared in lower case
MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl", ".json")


@dataclass(frozen=True)
class SkippedItem:
    """A file (or an utterance in it) that was left out, and why (the reason's part before ``:`` is its kind)."""

    path: str
    reason: str


@dataclass
class LoadedCorpus:
    """A corpus read into cuts.

    Attributes:
      cuts: one mono cut per usable utterance (``custom``: ``output_stem``, ``output_offset``).
      layout: one of ``LAYOUTS``.
      skipped: what was left out, in the order met.
    """

    cuts: CutSet
    layout: str
    skipped: List[SkippedItem] = field(default_factory=list)

    @property
    def speakers(self) -> List[str]:
        """Sorted speaker names of the cuts' supervisions."""
        return sorted({s.speaker for c in self.cuts for s in c.supervisions if s.speaker is not None})


@dataclass
class ChannelMeanDownmix(AudioTransform):
    """Lhotse audio transform: the mean of all channels.

    Dimension symbols: C channels, N samples.
    """

    def __call__(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Averages the channels.

        Args:
          samples: array of shape (C, N) (or (N,)).
          sampling_rate: unused.

        Returns:
          Array of shape (1, N), of the dtype of ``samples``.
        """
        samples = np.asarray(samples)
        if samples.ndim == 1:
            return samples.reshape(1, -1)
        return samples.mean(axis=0, keepdims=True).astype(samples.dtype)

    def reverse_timestamps(self, offset: float, duration: Optional[float], sampling_rate: int):
        """Times are unchanged."""
        return offset, duration


def to_mono(recording: Recording) -> Recording:
    """A one-channel view of ``recording``: itself when mono, else reading all sources and averaging them.

    Args:
      recording: any lhotse recording.

    Returns:
      A recording with ``channel_ids == [0]``; nothing is read.
    """
    if recording.num_channels == 1 and recording.channel_ids == [0]:
        return recording
    return fastcopy(recording, sources=[fastcopy(s, channels=[0]) for s in recording.sources], channel_ids=[0],
                    transforms=[ChannelMeanDownmix().to_dict()] + list(recording.transforms or []))


def safe_id(name: str) -> str:
    r"""``name`` with whitespace, ``/`` and ``\\`` replaced by ``_`` (usable as a file name and CTM id)."""
    return re.sub(r"[\s/\\]+", "_", name.strip())


def progress_bar(items: Iterable, progress: bool, desc: str) -> Iterable:
    """``items`` wrapped in a tqdm bar when ``progress``."""
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def existing_dir(path: Pathlike) -> Path:
    """``path`` as a Path; FsalignError if it is missing or not a folder."""
    path = Path(path)
    if not path.exists():
        raise FsalignError(f"corpus folder {path} does not exist")
    if not path.is_dir():
        raise FsalignError(f"expected a corpus folder, got the file {path}")
    return path


def is_manifest(path: Path) -> bool:
    """True for a file whose name ends in one of ``MANIFEST_SUFFIXES``."""
    return path.is_file() and path.name.lower().endswith(MANIFEST_SUFFIXES)


def dir_manifests(path: Path) -> List[Path]:
    """The lhotse cuts/recordings/supervisions manifests directly in folder ``path``, sorted."""
    names = ("cuts", "recordings", "supervisions")
    return sorted(p for p in path.iterdir() if is_manifest(p) and any(n in p.name for n in names))


def recording_from_header(path: Path, recording_id: str, skipped: List[SkippedItem]) -> Optional[Recording]:
    """The recording of ``path`` from its header, or None (recorded in ``skipped``) when unreadable or empty."""
    try:
        recording = Recording.from_file(path, recording_id=recording_id)
    except Exception as e:  # lhotse's AudioLoadingError lists every backend's failure: show libsndfile's
        try:
            import soundfile

            soundfile.info(str(path))
            detail = str(e).splitlines()[0]
        except Exception as sf_error:
            detail = str(sf_error)
        skipped.append(SkippedItem(str(path), f"unreadable audio: {' '.join(detail.split())[:200]}"))
        return None
    if recording.num_samples <= 0:
        skipped.append(SkippedItem(str(path), "unreadable audio: no samples"))
        return None
    return recording


def fit_to_audio(sup: SupervisionSegment, duration: float, where: str, skipped: List[SkippedItem]):
    """``sup`` with its end clipped to the audio, or None (recorded) when it starts at or after the end."""
    if sup.start >= duration - 1e-3 or sup.duration <= 0:
        skipped.append(SkippedItem(where, f"empty segment: {sup.id} spans {sup.start:.3f}-{sup.end:.3f} s "
                                          f"of {duration:.3f} s of audio"))
        return None
    return sup if sup.end <= duration else fastcopy(sup, duration=round(duration - sup.start, 6))


def finish_corpus(path: Path, layout: str, recordings: List[Recording], sups: List[SupervisionSegment],
            stems: Dict[str, str], skipped: List[SkippedItem]) -> LoadedCorpus:
    """One cut per supervision (lhotse ``from_manifests`` + ``trim_to_supervisions``) with output stem/offset."""
    if not sups:
        kinds = Counter(item.reason.split(":")[0] for item in skipped)
        found = ", ".join(f"{n} x {kind}" for kind, n in sorted(kinds.items())) or "no audio or transcripts"
        raise FsalignError(f"no usable utterance in {path} ({layout} layout): {found}")
    sups = [fastcopy(s, channel=0, id=safe_id(s.id)) for s in sups]
    duplicates = [i for ids in ([s.id for s in sups], [r.id for r in recordings])
                  for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise FsalignError(f"utterance or recording ids repeat in {path}: {', '.join(sorted(duplicates)[:5])}")
    used = {s.recording_id for s in sups}
    recordings = RecordingSet.from_recordings(to_mono(r) for r in recordings if r.id in used)
    cuts = CutSet.from_manifests(recordings, SupervisionSet.from_segments(sups)).trim_to_supervisions(
        keep_overlapping=False)
    order = {s.id: k for k, s in enumerate(sups)}
    cuts = CutSet.from_cuts(sorted((fastcopy(c, custom={**(c.custom or {}), "output_stem": stems[c.recording_id],
                                                        "output_offset": c.start}) for c in cuts),
                                   key=lambda c: order[c.id]))
    logger.info("%s (%s layout): %d cuts, %d items skipped", path, layout, len(cuts), len(skipped))
    return LoadedCorpus(cuts=cuts, layout=layout, skipped=skipped)


def chunked_features(samples: np.ndarray, sampling_rate: int, extractor,
                     chunk_s: float = FEATURE_CHUNK_S) -> np.ndarray:
    """Kaldi-style frame features of a long signal, ``chunk_s`` seconds at a time: one call's, in bounded memory.

    lhotse's ``Fbank`` holds the frames of the whole signal and their spectra at once (about 2.7
    GB for an hour); every frame depends only on its own window of samples, so the frames are
    computed in pieces: frame i reads samples [i·shift − (window − shift)/2, + window) of the signal
    reflected at both ends (lhotse's ``snip_edges=False``), and each piece is that stretch computed
    with ``snip_edges=True``. The result equals ``extractor.extract(samples, sampling_rate)``.

    Args:
      samples: array of shape (1, N) or (N,), float32.
      sampling_rate: its rate (the extractor's).
      extractor: a lhotse kaldi-style extractor (``Fbank``, ``Mfcc``, ``Spectrogram``) with
        ``snip_edges=False``, ``dither=0``; any other is called once on the whole signal.
      chunk_s: seconds per piece.

    Returns:
      Array of shape (frames, features), float32.
    """
    import dataclasses
    import warnings

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    config = getattr(extractor, "config", None)
    fields = ("frame_length", "frame_shift", "snip_edges", "dither")
    if config is None or not all(hasattr(config, f) for f in fields) or config.snip_edges or config.dither:
        return extractor.extract(x[None], sampling_rate)
    window = int(round(config.frame_length * sampling_rate))
    shift = int(round(config.frame_shift * sampling_rate))
    num = len(x)
    frames = (num + shift // 2) // shift
    per_chunk = max(1, int(chunk_s / config.frame_shift))
    if frames <= per_chunk:
        return extractor.extract(x[None], sampling_rate)
    with warnings.catch_warnings():  # lhotse warns that snip_edges=True differs from Kaldi's default
        warnings.simplefilter("ignore")
        piecewise = type(extractor)(dataclasses.replace(config, snip_edges=True))
    left = (window - shift) // 2
    pieces = []
    for f0 in range(0, frames, per_chunk):
        f1 = min(f0 + per_chunk, frames)
        j = np.arange(f0 * shift, (f1 - 1) * shift + window) - left  # sample of the reflected signal
        j = np.where(j < 0, -j - 1, np.where(j >= num, 2 * num - 1 - j, j))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pieces.append(piecewise.extract(x[j][None], sampling_rate))
    return np.concatenate(pieces, 0)
