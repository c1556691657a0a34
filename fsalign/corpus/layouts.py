r"""Corpora as users keep them -> lhotse cuts: MFA folders, Kaldi data dirs, LibriSpeech trees, lhotse manifests.

:func:`load_corpus` detects the layout (:func:`detect_layout`) and returns a :class:`LoadedCorpus`:
one mono :class:`~lhotse.MonoCut` per utterance, at the audio's native sample rate (resample later
with ``cut.resample(16000)``), plus the files it left out and why. Only audio headers are read.

Layouts (``LAYOUTS``):

* ``"mfa"``: Montreal Forced Aligner's corpus format. Audio files (``AUDIO_SUFFIXES``) anywhere
  below the folder, each with a transcript of the same stem beside it: ``.lab`` or ``.txt`` (plain
  text, whitespace folded; one utterance spanning the file) or ``.TextGrid`` (every non-empty
  interval of every interval tier is an utterance, the tier name its speaker). Otherwise the speaker
  is the name of the file's folder (the corpus folder's own name for files at its top), as in MFA.
  With several transcripts for one stem, ``.lab`` beats ``.txt`` beats ``.TextGrid``.
* ``"kaldi"``: a data dir with ``wav.scp`` and ``text`` (optional ``segments``, ``utt2spk`` -- each
  utterance is its own speaker without it --, ``spk2gender``, ``utt2lang``, ``reco2dur``), read by
  ``lhotse.kaldi.load_kaldi_data_dir``. Plain ``wav.scp`` paths are taken as given, else relative to
  the data dir. ``cmd |`` entries need their duration in ``reco2dur`` and are assumed to have the
  sample rate of the plain files (of the first command's output when there are none).
* ``"librispeech"``: ``<part>/<speaker>/<chapter>/*.flac`` + ``*.trans.txt`` (a part folder, or a
  root holding parts), each line read by lhotse's LibriSpeech parser (word alignments of
  ``<speaker>-<chapter>.alignment.txt`` files beside the transcripts are kept).
* ``"lhotse"``: a cut manifest (``.jsonl.gz``, ``.jsonl``, ``.json``), a recordings manifest with its
  supervisions manifest beside it (``recordings`` -> ``supervisions`` in the name), or a folder
  holding either.

Ids: a cut's id is its utterance's id, whitespace, ``/`` and ``\\`` replaced by ``_``. MFA: the
file stem when stems are unique across the corpus, else (for every file) the file's path below the
corpus folder without suffix, parts joined by ``-`` (``<speaker>-<stem>``); a TextGrid with several
utterances gives ``<id>-001``, ``<id>-002``... in time order (one utterance: ``<id>``). Kaldi and
LibriSpeech: the utterance ids; lhotse: the cut (or supervision) ids. Order: sorted paths for MFA and
LibriSpeech, the order of ``segments`` (else sorted recording ids) for Kaldi, file order for lhotse.
Cut boundaries fall on audio samples (lhotse rounds them), so a TextGrid interval's start may move
by up to half a sample.

Each cut's ``custom`` holds ``output_stem`` (where its output goes, a relative POSIX path without
suffix: the audio file's path below the corpus folder for MFA and LibriSpeech, the recording id for
Kaldi and lhotse) and ``output_offset`` (seconds from the start of that file to the start of the
cut, = ``cut.start``): all cuts of one recording share one stem, so one TextGrid can hold them.

A multi-channel recording becomes mono lazily: its sources are read whole and averaged by the
:class:`ChannelMeanDownmix` transform (lhotse's ``MultiCut.to_mono(mono_downmix=True)`` decodes the
audio into memory and sums the channels). Reading such cuts back from a manifest needs this module
imported, which registers the transform with lhotse.
"""
from pathlib import Path
from typing import Optional

from fsalign.corpus.indexed_layouts import load_kaldi, load_lhotse, load_librispeech
from fsalign.corpus.mfa import load_mfa
from fsalign.corpus.recordings import (
    AUDIO_SUFFIXES,
    LAYOUTS,
    MANIFEST_SUFFIXES,
    TRANSCRIPT_SUFFIXES,
    ChannelMeanDownmix,
    LoadedCorpus,
    SkippedItem,
    dir_manifests,
    existing_dir,
    to_mono,
)
from fsalign.errors import FsalignError
from fsalign.util import Pathlike

__all__ = [
    "LAYOUTS", "AUDIO_SUFFIXES", "TRANSCRIPT_SUFFIXES", "MANIFEST_SUFFIXES", "SkippedItem", "LoadedCorpus",
    "ChannelMeanDownmix", "to_mono", "detect_layout", "load_corpus", "load_mfa", "load_kaldi", "load_librispeech",
    "load_lhotse",
]


def detect_layout(path: Pathlike) -> str:
    """Which of ``LAYOUTS`` the corpus at ``path`` has.

    Rules: a manifest file -> ``lhotse``; in a folder, ``wav.scp`` -> ``kaldi``,
    ``*/*/*.trans.txt`` or ``*/*/*/*.trans.txt`` -> ``librispeech``, lhotse manifests whose names
    hold ``cuts``/``recordings``/``supervisions`` -> ``lhotse`` (more than one of these: ambiguous),
    else an audio file anywhere below it -> ``mfa``.

    Args:
      path: corpus folder or manifest file.

    Returns:
      The layout name.

    Raises:
      FsalignError: the path does not exist, or holds no layout, or more than one.
    """
    path = Path(path)
    if path.is_file():
        if path.name.lower().endswith(MANIFEST_SUFFIXES):
            return "lhotse"
        raise FsalignError(f"{path} is a file but not a lhotse manifest ({', '.join(MANIFEST_SUFFIXES)})")
    path = existing_dir(path)
    found = []
    if (path / "wav.scp").is_file():
        found.append("kaldi")
    if next(path.glob("*/*/*.trans.txt"), None) or next(path.glob("*/*/*/*.trans.txt"), None):
        found.append("librispeech")
    if dir_manifests(path):
        found.append("lhotse")
    if len(found) > 1:
        raise FsalignError(f"ambiguous corpus layout of {path}: it looks like {' and '.join(found)}; pass the layout")
    if found:
        return found[0]
    if any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.rglob("*") if p.is_file()):
        return "mfa"
    raise FsalignError(
        f"cannot tell the corpus layout of {path}: found no wav.scp (Kaldi), no <speaker>/<chapter>/*.trans.txt "
        f"(LibriSpeech), no lhotse cuts/recordings/supervisions manifest and no audio file "
        f"({', '.join(AUDIO_SUFFIXES)}) in it or below it (MFA)")


def load_corpus(path: Pathlike, layout: Optional[str] = None, progress: bool = False) -> LoadedCorpus:
    """Reads a corpus into mono cuts, one per utterance (see the module docstring for the layouts).

    Args:
      path: corpus folder or manifest file.
      layout: one of ``LAYOUTS``; None to detect it.
      progress: show tqdm progress bars.

    Returns:
      The cuts, the layout and the skipped items.

    Raises:
      FsalignError: missing path, unknown or ambiguous layout, or nothing usable in the corpus.
    """
    layout = detect_layout(path) if layout is None else layout
    loaders = {"mfa": load_mfa, "kaldi": load_kaldi, "librispeech": load_librispeech, "lhotse": load_lhotse}
    if layout not in loaders:
        raise FsalignError(f"unknown corpus layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    return loaders[layout](path, progress=progress)
