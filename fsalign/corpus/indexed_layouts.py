"""Readers of the corpus layouts whose utterances are listed in index files: Kaldi, LibriSpeech, lhotse.

The layouts, ids and cut fields are described in :mod:`fsalign.corpus.layouts`; call
:func:`fsalign.corpus.layouts.load_corpus` to have the layout detected. Each reader leaves out what
lhotse's own loader would stop on (unreadable audio, empty transcripts) and lists it as skipped.
"""
import subprocess
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Dict, List

from lhotse import CutSet, MonoCut, MultiCut, Recording, RecordingSet, SupervisionSet, load_manifest
from lhotse.utils import fastcopy

from fsalign.corpus.recordings import (
    MANIFEST_SUFFIXES,
    ChannelMeanDownmix,
    LoadedCorpus,
    SkippedItem,
    dir_manifests,
    existing_dir,
    finish_corpus,
    fit_to_audio,
    progress_bar,
    recording_from_header,
    safe_id,
    to_mono,
)
from fsalign.errors import FsalignError
from fsalign.util import Pathlike

__all__ = ["load_kaldi", "load_librispeech", "load_lhotse"]


def _kaldi_lines(path: Path, fields: int) -> List[List[str]]:
    if not path.is_file():
        return []
    lines = [line.split(maxsplit=fields - 1) for line in path.read_text(encoding="utf-8").splitlines()]
    return [f for f in lines if f]


def load_kaldi(path: Pathlike, progress: bool = False) -> LoadedCorpus:
    """Reads a Kaldi data directory (layout ``"kaldi"``) with ``lhotse.kaldi.load_kaldi_data_dir``.

    Entries lhotse cannot take (unreadable audio, empty or missing transcripts) are left out first.

    Args:
      path: the data directory.
      progress: show a tqdm progress bar.

    Returns:
      The corpus.

    Raises:
      FsalignError: missing folder or ``wav.scp``, or no usable utterance.
    """
    from lhotse.kaldi import load_kaldi_data_dir

    root = existing_dir(path)
    if not (root / "wav.scp").is_file():
        raise FsalignError(f"Kaldi data dir {root} has no wav.scp")
    skipped: List[SkippedItem] = []
    scp = {f[0]: f[1].strip() for f in _kaldi_lines(root / "wav.scp", 2) if len(f) == 2}
    given_dur = {f[0]: f[1] for f in _kaldi_lines(root / "reco2dur", 2) if len(f) == 2}
    texts = {f[0]: " ".join(f[1].split()) if len(f) == 2 else "" for f in _kaldi_lines(root / "text", 2)}
    segments = _kaldi_lines(root / "segments", 5)
    for name, lines, n in (("wav.scp", _kaldi_lines(root / "wav.scp", 2), 2), ("segments", segments, 4)):
        skipped += [SkippedItem(str(root / name), f"malformed line: {' '.join(f)}") for f in lines if len(f) != n]
    segments = [f for f in segments if len(f) == 4]
    skipped += [SkippedItem(str(root / "segments"), f"transcript without audio: {f[0]} refers to {f[1]}, "
                                                    "which wav.scp lacks") for f in segments if f[1] not in scp]
    plain: Dict[str, Recording] = {}
    entries: Dict[str, str] = {}
    for rid in progress_bar(sorted(scp), progress, f"Reading {root.name}"):
        entry = scp[rid]
        if entry.endswith("|"):
            if rid in given_dur:
                entries[rid] = entry
            else:
                skipped.append(SkippedItem(str(root / "wav.scp"), f"command without duration: {rid} needs reco2dur"))
            continue
        audio = Path(entry) if Path(entry).is_file() else root / entry
        if not audio.is_file():
            skipped.append(SkippedItem(str(root / "wav.scp"), f"audio file not found: {rid} {entry}"))
        else:
            recording = recording_from_header(audio, rid, skipped)
            if recording is not None:
                plain[rid], entries[rid] = recording, str(audio)
    keep = []
    for utt, rid, start, end in segments or [[rid, rid, "0", "-1"] for rid in sorted(scp)]:
        if rid in entries and not texts.get(utt):
            reason = "empty transcript" if utt in texts else "transcript missing"
            skipped.append(SkippedItem(str(root / "text"), f"{reason}: utterance {utt}"))
        elif rid in entries:
            keep.append((utt, rid, start, end))
    if not keep:
        return finish_corpus(root, "kaldi", [], [], {}, skipped)
    rate = next(iter(plain.values())).sampling_rate if plain else _command_rate(entries[keep[0][1]])
    speakers = {f[0]: f[1] for f in _kaldi_lines(root / "utt2spk", 2) if len(f) == 2}
    used = sorted({rid for _, rid, _, _ in keep})
    files = {"wav.scp": [f"{r} {entries[r]}" for r in used],
             "reco2dur": [f"{r} {plain[r].duration if r in plain else given_dur[r]}" for r in used],
             "text": [f"{u} {texts[u]}" for u, _, _, _ in keep],
             "utt2spk": [f"{u} {speakers.get(u, u)}" for u, _, _, _ in keep]}
    if segments:
        files["segments"] = [" ".join(k) for k in keep]
    for name, keys in (("spk2gender", {speakers.get(u, u) for u, *_ in keep}), ("utt2lang", {u for u, *_ in keep})):
        table = {f[0]: f[1] for f in _kaldi_lines(root / name, 2) if len(f) == 2}
        if keys <= table.keys():
            files[name] = [f"{k} {table[k]}" for k in sorted(keys)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, lines in files.items():
            (Path(tmp) / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        recs, sups, _ = load_kaldi_data_dir(tmp, sampling_rate=rate)
    downmix = ChannelMeanDownmix().to_dict()  # a command's output may have any number of channels
    recordings = {r.id: plain.get(r.id) or fastcopy(r, transforms=[downmix] + list(r.transforms or [])) for r in recs}
    fitted = [fit_to_audio(s, recordings[s.recording_id].duration, str(root / "segments"), skipped) for s in sups]
    return finish_corpus(root, "kaldi", list(recordings.values()), [s for s in fitted if s], {r: r for r in recordings},
                   skipped)


def _command_rate(entry: str) -> int:
    """Sample rate of a ``wav.scp`` command's output (the command is run once)."""
    import soundfile

    try:
        out = subprocess.run(entry.rstrip("| "), shell=True, capture_output=True, check=True).stdout
        return soundfile.info(BytesIO(out)).samplerate
    except (subprocess.CalledProcessError, RuntimeError) as e:
        raise FsalignError(f"cannot read the sample rate of the wav.scp command {entry!r}: {e}") from e


def load_librispeech(path: Pathlike, progress: bool = False) -> LoadedCorpus:
    """Reads a LibriSpeech-layout tree (layout ``"librispeech"``): a part folder, or a root holding parts.

    Every transcript line goes through ``lhotse.recipes.librispeech.parse_utterance``, the parser of
    ``prepare_librispeech`` (which itself stops on an empty line or an unreadable file).

    Args:
      path: ``<part>`` (holding ``<speaker>/<chapter>/*.trans.txt``) or the folder holding parts.
      progress: show a tqdm progress bar.

    Returns:
      The corpus; output stems are ``[<part>/]<speaker>/<chapter>/<utterance>`` below ``path``.

    Raises:
      FsalignError: missing folder, no ``*.trans.txt`` found, or no usable utterance.
    """
    from lhotse.recipes.librispeech import parse_alignments, parse_utterance

    root = existing_dir(path)
    parts = [root] if next(root.glob("*/*/*.trans.txt"), None) else sorted(
        p for p in root.iterdir() if p.is_dir() and next(p.glob("*/*/*.trans.txt"), None))
    if not parts:
        raise FsalignError(f"no LibriSpeech transcripts (<speaker>/<chapter>/*.trans.txt) in {root} or its parts")
    skipped: List[SkippedItem] = []
    recordings, sups, stems = [], [], {}
    for part in parts:
        listed = set()
        for trans in progress_bar(sorted(part.glob("*/*/*.trans.txt")), progress, f"Reading {part.name}"):
            ali = trans.with_name(trans.name.split(".")[0] + ".alignment.txt")
            alignments = parse_alignments(ali) if ali.is_file() else {}
            for line in trans.read_text(encoding="utf-8").splitlines():
                fields = line.split(maxsplit=1)
                if not fields:
                    continue
                audio = part / Path(fields[0].replace("-", "/")).parent / f"{fields[0]}.flac"
                listed.add(audio)
                if len(fields) < 2:
                    skipped.append(SkippedItem(str(trans), f"empty transcript: utterance {fields[0]}"))
                elif not audio.is_file():
                    skipped.append(SkippedItem(str(trans), f"transcript without audio: {audio.name} not found"))
                elif recording_from_header(audio, fields[0], skipped) is not None:
                    recording, sup = parse_utterance(part, line, alignments)
                    recordings.append(recording)
                    sups.append(sup)
                    stems[recording.id] = audio.relative_to(root).with_suffix("").as_posix()
        skipped += [SkippedItem(str(p), "audio without transcript") for p in sorted(part.glob("*/*/*.flac"))
                    if p not in listed]
    return finish_corpus(root, "librispeech", recordings, sups, stems, skipped)


def load_lhotse(path: Pathlike, progress: bool = False) -> LoadedCorpus:
    """Reads lhotse manifests (layout ``"lhotse"``): cuts, or recordings + supervisions.

    A multi-channel cut is downmixed (:func:`fsalign.corpus.layouts.to_mono`); cuts that keep their
    ``output_stem``/``output_offset`` (e.g. written by :func:`~fsalign.corpus.layouts.load_corpus`) keep them.

    Args:
      path: a cut manifest; a recordings (or supervisions) manifest whose name with ``recordings``
        -> ``supervisions`` (or back) names its partner beside it; or a folder holding one cut manifest or one pair.
      progress: show a tqdm progress bar.

    Returns:
      The corpus.

    Raises:
      FsalignError: missing path, a recordings manifest without supervisions, unreadable manifests, or
        no usable utterance.
    """
    path = Path(path)
    if not path.exists():
        raise FsalignError(f"lhotse manifest {path} does not exist")
    files = dir_manifests(path) if path.is_dir() else [path]
    cut_files = [f for f in files if "cuts" in f.name]
    if path.is_dir() and len(cut_files) != 1 and len(files) != 2:
        raise FsalignError(f"{path} should hold one lhotse cut manifest or one recordings + supervisions pair, "
                           f"found {', '.join(f.name for f in files) or 'no manifest'}")
    manifests = [_load(f) for f in (cut_files if len(cut_files) == 1 else files)]
    if len(manifests) == 1 and not isinstance(manifests[0], CutSet):
        own, other = ("recordings", "supervisions") if isinstance(manifests[0], RecordingSet) else ("supervisions",
                                                                                                    "recordings")
        partner = path.with_name(path.name.replace(own, other))
        if own not in path.name or not partner.is_file():
            raise FsalignError(f"{path} is a lhotse {own} manifest alone: a corpus needs its {other} too "
                               f"(looked for {partner.name} beside it), or give a cut manifest")
        manifests.append(_load(partner))
    skipped: List[SkippedItem] = []
    if len(manifests) == 2:
        recs = next((m for m in manifests if isinstance(m, RecordingSet)), None)
        sups = next((m for m in manifests if isinstance(m, SupervisionSet)), None)
        if recs is None or sups is None:
            raise FsalignError(f"expected a recordings and a supervisions manifest in {path}")
        by_id = {r.id: r for r in recs}
        have = {s.recording_id for s in sups}
        skipped += [SkippedItem(str(path), f"audio without transcript: recording {r.id}") for r in recs
                    if r.id not in have]
        fitted = []
        for s in sups:
            if s.recording_id not in by_id or not (s.text or "").strip():
                what = "empty transcript" if s.recording_id in by_id else "transcript without audio"
                skipped.append(SkippedItem(str(path), f"{what}: supervision {s.id}"))
            else:
                fitted.append(fit_to_audio(s, by_id[s.recording_id].duration, str(path), skipped))
        return finish_corpus(path, "lhotse", list(recs), [s for s in fitted if s],
                       {r.id: safe_id(r.id) for r in recs}, skipped)
    cuts = []
    for cut in progress_bar(manifests[0], progress, "Reading cuts"):
        texts = [s for s in cut.supervisions if (s.text or "").strip()]
        if not isinstance(cut, (MonoCut, MultiCut)) or not cut.has_recording or not texts:
            why = "empty transcript" if isinstance(cut, (MonoCut, MultiCut)) and cut.has_recording else "no recording"
            skipped.append(SkippedItem(str(path), f"{why}: cut {cut.id} ({type(cut).__name__})"))
            continue
        custom = {"output_stem": safe_id(cut.recording_id), "output_offset": cut.start, **(cut.custom or {})}
        if isinstance(cut, MonoCut):  # already one channel (of possibly several): kept as it is
            cuts.append(fastcopy(cut, id=safe_id(cut.id), supervisions=texts, custom=custom))
        else:
            cuts.append(MonoCut(id=safe_id(cut.id), start=cut.start, duration=cut.duration, channel=0,
                                recording=to_mono(cut.recording), custom=custom,
                                supervisions=[fastcopy(s, channel=0) for s in texts]))
    if not cuts:
        return finish_corpus(path, "lhotse", [], [], {}, skipped)
    duplicates = len(cuts) - len({c.id for c in cuts})
    if duplicates:
        raise FsalignError(f"{duplicates} cut ids repeat in {path} (after whitespace and '/' became '_')")
    return LoadedCorpus(cuts=CutSet.from_cuts(cuts), layout="lhotse", skipped=skipped)


def _load(path: Path):
    if not path.name.lower().endswith(MANIFEST_SUFFIXES):
        raise FsalignError(f"{path} is not a lhotse manifest ({', '.join(MANIFEST_SUFFIXES)})")
    try:
        return load_manifest(path)
    except Exception as e:  # lhotse raises ValueError, JSON and gzip errors
        raise FsalignError(f"cannot read the lhotse manifest {path}: {type(e).__name__}: {e}") from e
