"""Preparation (recipe command line) on a tiny synthetic LibriSpeech-layout corpus, and
batches from fsalign.corpus.cuts, checked against the files written and independent formulas."""
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from lhotse import CutSet, load_manifest

from fsalign.corpus.cuts import Batch, CutDataset, make_dataloader, reference_words
from fsalign.corpus.prepare import (
    compute_features,
    main,
    prepare_manifests,
    prepare_tokenizers,
)
from fsalign.corpus.tokenizers import CharTokenizer, PhoneTokenizer, Tokenizer
from fsalign.errors import FsalignError

REPO = Path(__file__).resolve().parents[2]
PARTS = ("train-clean-5", "dev-clean-2")
# utterance id -> (transcript, duration in seconds); durations not all on the 10 ms grid
UTTERANCES = {
    "train-clean-5": {
        "19-198-0000": ("HELLO WORLD", 1.0),
        "19-198-0001": ("THE CAT SAT ON THE MAT", 1.37),
        "19-198-0002": ("A DOG DON'T BARK", 0.7313),
        "26-495-0000": ("SHE SAW THE OLD MAN WALK HOME", 1.5),
    },
    "dev-clean-2": {
        "84-121-0000": ("THE OLD CAT", 0.85),
        "84-121-0001": ("HELLO ZORBLAXIAN WORLD", 0.61),  # not in CMUdict
    },
}
# reference alignment (word, start, end) for train utterance 19-198-0000; "" = pause
ALIGNMENT = [("", 0.0, 0.12), ("HELLO", 0.12, 0.5), ("WORLD", 0.5, 0.91), ("", 0.91, 1.0)]
VOCAB_SIZE = 24


def _write_corpus(root: Path) -> None:
    rng = np.random.default_rng(0)
    for part, utts in UTTERANCES.items():
        chapters = {}
        for utt, (text, duration) in utts.items():
            spk, chap, _ = utt.split("-")
            folder = root / "LibriSpeech" / part / spk / chap
            folder.mkdir(parents=True, exist_ok=True)
            t = np.arange(round(duration * 16000)) / 16000
            audio = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 900) * t) + 0.05 * rng.standard_normal(t.size)
            soundfile.write(folder / f"{utt}.flac", audio.astype(np.float32), 16000)
            chapters.setdefault(folder, []).append(f"{utt} {text}\n")
        for folder, lines in chapters.items():
            (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("".join(lines))
    ali = root / "alignments" / "LibriSpeech" / "train-clean-5" / "19" / "198"
    ali.mkdir(parents=True)
    words = ",".join(w for w, _, _ in ALIGNMENT)
    ends = ",".join(f"{e:.3f}" for _, _, e in ALIGNMENT)
    (ali / "19-198.alignment.txt").write_text(f'19-198-0000 "{words}" "{ends}"\n')


def _prepare_command(root: Path):
    return [
        sys.executable, "recipes/librispeech/prepare.py", "--corpus-dir", str(root / "LibriSpeech"),
        "--alignments-dir", str(root / "alignments" / "LibriSpeech"), "--parts", *PARTS,
        "--output-dir", str(root / "data"), "--vocab-size", str(VOCAB_SIZE), "--oov", "skip",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Run the recipe from the repository root as a user would; returns the corpus root."""
    root = tmp_path_factory.mktemp("corpus")
    _write_corpus(root)
    done = subprocess.run(_prepare_command(root), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _cuts(root: Path, part: str) -> CutSet:
    return load_manifest(root / "data" / f"cuts_{part}.jsonl.gz")


def test_prepare_writes_manifests_features_and_lang_dirs(prepared):
    data = prepared / "data"
    for part in PARTS:
        assert (data / "manifests" / f"librispeech_recordings_{part}.jsonl.gz").is_file()
        assert (data / "manifests" / f"librispeech_supervisions_{part}.jsonl.gz").is_file()
        cuts = _cuts(prepared, part)
        assert sorted(c.id for c in cuts) == sorted(UTTERANCES[part])
        assert {c.id: c.supervisions[0].text for c in cuts} == {u: t for u, (t, _) in UTTERANCES[part].items()}
    for unit in ("char", "phone", "spm", "bpe"):
        tok = Tokenizer.load(data / f"lang_{unit}")
        assert tok.unit == unit and tok.oov == "skip"
    assert Tokenizer.load(data / "lang_spm").num_labels == VOCAB_SIZE
    assert (data / "lang_phone" / "oov.txt").read_text() == "ZORBLAXIAN 1\n"
    assert not (data / "lang_char" / "oov.txt").exists()


def test_features_have_80_dims_and_kaldi_frame_count(prepared):
    for part in PARTS:
        for cut in _cuts(prepared, part):
            samples = soundfile.info(cut.recording.sources[0].source).frames
            expected = (samples + 80) // 160  # Kaldi frame count with snip_edges=False, 10 ms shift
            feats = cut.load_features()
            assert feats.shape == (expected, 80), cut.id
            assert cut.num_frames == expected and np.isfinite(feats).all()


def test_rerun_skips_finished_stages(prepared, caplog):
    data = prepared / "data"
    outputs = [*data.glob("manifests/*.jsonl.gz"), *data.glob("cuts_*.jsonl.gz"), *data.glob("lang_*/tokenizer.json")]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    caplog.set_level(logging.INFO, logger="fsalign.corpus.prepare")
    main(_prepare_command(prepared)[2:])  # in-process this time: same arguments as the recipe
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 2 + 2 + 4


def test_phone_oov_error_stops_stage_3_listing_words(prepared, tmp_path):
    (tmp_path / "manifests").mkdir()
    for path in (prepared / "data" / "manifests").glob("*.jsonl.gz"):
        (tmp_path / "manifests" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(FsalignError, match="ZORBLAXIAN"):
        prepare_tokenizers(tmp_path, PARTS, "train-clean-5", units=["phone"], oov="error")
    assert (tmp_path / "lang_phone" / "oov.txt").read_text() == "ZORBLAXIAN 1\n"
    assert not (tmp_path / "lang_phone" / "tokenizer.json").exists()


def test_missing_part_raises_with_found_parts(prepared, tmp_path):
    with pytest.raises(FsalignError, match="train-clean-5"):
        prepare_manifests(prepared / "LibriSpeech", ["test-other"], tmp_path)


@pytest.mark.parametrize("bucketing", [True, False])
def test_batches_have_right_shapes(prepared, bucketing):
    tok = CharTokenizer()
    cuts = {c.id: c for c in _cuts(prepared, "train-clean-5")}
    path = prepared / "data" / "cuts_train-clean-5.jsonl.gz"
    seen = []
    for batch in make_dataloader(str(path), tok, max_duration=3.0, bucketing=bucketing):
        assert isinstance(batch, Batch) and not batch.skipped
        expected_lengths = [cuts[i].num_frames for i in batch.cut_ids]
        assert batch.features.shape == (len(batch), max(expected_lengths), 80)
        assert batch.features.dtype == torch.float32
        assert batch.feature_lengths.tolist() == expected_lengths
        assert expected_lengths == sorted(expected_lengths, reverse=True)
        for b, cut_id in enumerate(batch.cut_ids):
            n = expected_lengths[b]
            assert torch.equal(batch.features[b, :n], torch.from_numpy(cuts[cut_id].load_features()))
            assert not batch.features[b, n:].any()
            assert batch.texts[b] == UTTERANCES["train-clean-5"][cut_id][0]
            assert batch.transcripts[b] == tok.encode(batch.texts[b])
        seen += batch.cut_ids
    assert sorted(seen) == sorted(cuts)


def test_on_the_fly_features_match_precomputed(prepared):
    cuts = _cuts(prepared, "dev-clean-2").subset(cut_ids=["84-121-0000"])
    dataset = CutDataset(CharTokenizer())
    precomputed = dataset[cuts]
    on_the_fly = dataset[cuts.drop_features()]
    assert on_the_fly.features.shape == precomputed.features.shape
    # lilcom storage quantises log-energies; its error is far below the features' spread
    assert (on_the_fly.features - precomputed.features).abs().max() < 0.05
    assert precomputed.features.std() > 1.0


def test_reference_word_alignments_relative_to_cut(prepared):
    cuts = _cuts(prepared, "train-clean-5")
    batch = CutDataset(CharTokenizer())[cuts]
    for cut_id, words in zip(batch.cut_ids, batch.word_alignments):
        if cut_id != "19-198-0000":
            assert words is None
            continue
        got = [(w.label, w.start, round(w.end, 6)) for w in words]
        assert got == [a for a in ALIGNMENT if a[0]]
    cut = cuts["19-198-0000"].truncate(offset=0.3)
    assert [round(w.start, 6) for w in reference_words(cut)] == [round(s - 0.3, 6) for w, s, _ in ALIGNMENT if w]


def test_bad_transcript_gives_cut_id(prepared):
    cuts = _cuts(prepared, "dev-clean-2")
    with pytest.raises(FsalignError, match="84-121-0001.*ZORBLAXIAN"):
        CutDataset(PhoneTokenizer(oov="error"))[cuts]
    batch = CutDataset(PhoneTokenizer(oov="skip"))[cuts]
    assert batch.cut_ids == ["84-121-0000"] and batch.features.shape[0] == 1
    assert list(batch.skipped) == ["84-121-0001"] and "ZORBLAXIAN" in batch.skipped["84-121-0001"]


def test_rank_shards_are_disjoint_and_cover_cuts(prepared):
    cuts = _cuts(prepared, "train-clean-5") + _cuts(prepared, "dev-clean-2")
    tok = CharTokenizer(oov="skip")
    shards = [
        [i for batch in make_dataloader(cuts, tok, max_duration=1.6, rank=r, world_size=2) for i in batch.cut_ids]
        for r in range(2)
    ]
    # lhotse pads the shorter shard with copies named <id>_dup<k> so ranks see equal batch counts
    originals = [[i for i in shard if "_dup" not in i] for shard in shards]
    assert originals[0] and originals[1] and not set(originals[0]) & set(originals[1])
    assert sorted(originals[0] + originals[1]) == sorted(c.id for c in cuts)
    assert all(re.fullmatch(r".+_dup\d+", i) for shard in shards for i in shard if i not in originals[0] + originals[1])


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs a worker process")
def test_worker_process_yields_same_batches(prepared):
    cuts = _cuts(prepared, "train-clean-5")
    tok = Tokenizer.load(prepared / "data" / "lang_bpe")
    serial = list(make_dataloader(cuts, tok, max_duration=2.0, num_workers=0))
    parallel = list(make_dataloader(cuts, tok, max_duration=2.0, num_workers=1))
    assert [b.cut_ids for b in serial] == [b.cut_ids for b in parallel]
    assert [b.transcripts for b in serial] == [b.transcripts for b in parallel]
    assert all(torch.equal(a.features, b.features) for a, b in zip(serial, parallel))


@pytest.mark.slow
def test_parallel_feature_jobs_match_single_job(prepared, tmp_path):
    (tmp_path / "manifests").mkdir()
    for path in (prepared / "data" / "manifests").glob("*train-clean-5.jsonl.gz"):
        (tmp_path / "manifests" / path.name).write_bytes(path.read_bytes())
    compute_features(tmp_path, ["train-clean-5"], num_jobs=2)
    parallel = load_manifest(tmp_path / "cuts_train-clean-5.jsonl.gz")
    assert (tmp_path / "feats_train-clean-5").is_dir()
    for cut in _cuts(prepared, "train-clean-5"):
        assert np.array_equal(parallel[cut.id].load_features(), cut.load_features())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_batches_move_to_cuda(prepared):
    tok = CharTokenizer()
    for batch in make_dataloader(_cuts(prepared, "train-clean-5"), tok, max_duration=3.0, pin_memory=True):
        assert batch.features.is_pinned()
        on_gpu = batch.to("cuda", non_blocking=True)
        assert on_gpu.features.is_cuda and on_gpu.feature_lengths.is_cuda
        assert torch.equal(on_gpu.features.cpu(), batch.features) and on_gpu.transcripts == batch.transcripts
