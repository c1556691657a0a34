"""The stages of :func:`fsalign.aligning.workflow.align_corpus`, each resumable from its files in ``work/``."""
import argparse
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fsalign.aligning.aligner import Aligner, align_cuts, make_scorer
from fsalign.aligning.corpus_output import CTM_NAME, write_corpus_outputs
from fsalign.aligning.journal import AlignResult, Journal
from fsalign.engine.mismatch import MismatchOptions
from fsalign.errors import FsalignError
from fsalign.util import Seconds, atomic_open

__all__ = ["load", "units", "features", "train", "align", "report", "summary_lines", "split_dev", "default_epochs"]

logger = logging.getLogger(__name__)

UNTRAINED_LER = 0.8  # a model whose dev LER is above this has not learnt the units


def _write_cuts(cuts, path: Path) -> None:
    tmp = path.with_name(f".tmp_{path.name}")
    cuts.to_file(tmp)
    tmp.replace(path)


def load(job, work: Path):
    """Stage 1: the corpus as cuts (``work/corpus.jsonl.gz``) and what was skipped (``work/skipped.json``)."""
    from lhotse import CutSet

    from fsalign.corpus.layouts import LoadedCorpus, SkippedItem, load_corpus

    cuts_path, skipped_path = work / "corpus.jsonl.gz", work / "skipped.json"
    if cuts_path.is_file() and skipped_path.is_file():
        skipped = [SkippedItem(**s) for s in json.loads(skipped_path.read_text())]
        layout = json.loads((work / "settings.json").read_text()).get("layout")
        return LoadedCorpus(CutSet.from_file(cuts_path).to_eager(), layout or "?", skipped)
    corpus = load_corpus(job.corpus, job.layout, progress=job.progress)
    with atomic_open(skipped_path, "w", encoding="utf-8") as f:
        f.write(json.dumps([s.__dict__ for s in corpus.skipped], indent=1) + "\n")
    _write_cuts(corpus.cuts, cuts_path)
    logger.info("loaded %d utterances from %s (%s layout), skipped %d files", len(corpus.cuts), job.corpus,
                corpus.layout, len(corpus.skipped))
    return corpus


def _spoken_words(cuts) -> List[str]:
    from fsalign.corpus.cuts import cut_text
    from fsalign.corpus.normalize import spoken_words

    return [w for cut in cuts for w in spoken_words(cut_text(cut))]


def units(job, work: Path, cuts) -> Tuple[Any, Dict[str, List[str]]]:
    """Stage 2: the tokenizer (``work/lang_<unit>``) and the words the G2P model pronounced.

    Returns:
      ``(tokenizer, oovs_found)``; ``OUTPUT/oovs_found.txt`` lists the latter (``WORD PH1 PH2 ...``).
    """
    from fsalign.corpus.tokenizers import CharTokenizer, PhoneTokenizer, SentencePieceTokenizer, Tokenizer

    lang = work / f"lang_{job.unit}"
    oov_path = job.output / "oovs_found.txt"
    if (lang / "tokenizer.json").is_file():
        tokenizer = Tokenizer.load(lang)
        found = getattr(tokenizer, "extra", {}) if tokenizer.unit == "phone" else {}
        return tokenizer, dict(found)
    words = _spoken_words(cuts)
    if job.checkpoint is not None:
        from fsalign.checkpoint import load_checkpoint

        tokenizer = load_checkpoint(job.checkpoint).tokenizer
    elif job.unit == "phone":
        tokenizer = PhoneTokenizer()
    elif job.unit == "char":
        tokenizer = CharTokenizer()
    else:
        from fsalign.corpus.cuts import cut_text
        from fsalign.corpus.normalize import spoken_words

        texts = [" ".join(spoken_words(cut_text(c))) for c in cuts]
        model_type = "unigram" if job.unit == "spm" else "bpe"
        tokenizer = SentencePieceTokenizer.train(texts, job.vocab_size, model_type, clamp=True)
    found: Dict[str, List[str]] = {}
    if tokenizer.unit == "phone":
        tokenizer.oov = job.oov
        if job.oov == "g2p":
            found = tokenizer.pronounce_missing(words)
    else:
        tokenizer.oov = "error" if job.oov == "error" else "skip"
    missing = sorted(set(tokenizer.find_oov(" ".join(words))))
    if missing and job.oov == "error":
        raise FsalignError(f"{len(missing)} word(s) the {tokenizer.unit} units cannot spell: {missing[:20]}; "
                           f"pass --oov g2p or --oov skip")
    tokenizer.save(lang)
    with atomic_open(oov_path, "w", encoding="utf-8") as f:
        f.write("".join(f"{w} {' '.join(p)}\n" for w, p in sorted(found.items())))
    if found:
        logger.info("%d words outside the lexicon pronounced by the G2P model: %s", len(found), oov_path)
    return tokenizer, found


def features(job, work: Path, cuts):
    """Stage 3: fbank features of every cut (``work/cuts_all.jsonl.gz``, ``work/feats``).

    Long recordings (``job.long_audio``) keep no stored features: they are computed a minute at a
    time when the recording is aligned (:func:`fsalign.corpus.recordings.chunked_features`).
    """
    from lhotse import CutSet

    from fsalign.corpus.prepare import compute_cut_features

    path = work / "cuts_all.jsonl.gz"
    if path.is_file():
        return CutSet.from_file(path).to_eager()
    long_ids = {c.id for c in cuts if job.long_audio.is_long(c.duration)}
    logger.info("computing features of %d utterances (%d long recordings: while aligning)", len(cuts) - len(long_ids),
                len(long_ids))
    short = CutSet.from_cuts(c for c in cuts if c.id not in long_ids)
    computed = compute_cut_features(short, work / "feats", job.num_jobs, progress=job.progress) if len(short) else short
    by_id = {c.id: c for c in computed}
    kept = CutSet.from_cuts(by_id[c.id] if c.id in by_id else c for c in cuts if c.id in by_id or c.id in long_ids)
    _write_cuts(kept, path)
    return kept


def default_epochs(train_minutes: float) -> int:
    """Training epochs for a corpus of ``train_minutes`` of audio.

    About 400 minutes of audio seen, at least 20 epochs (the recipe's setting for the shipped
    20-minute corpus) and at most 100.
    """
    return int(min(100, max(20, math.ceil(400.0 / max(train_minutes, 1e-3)))))


def split_dev(cut_ids: List[str]) -> List[str]:
    """The held-out utterances: every k-th of the sorted ids, 5 % of them (at least 1, at most 100)."""
    ids = sorted(cut_ids)
    if len(ids) < 2:
        return []
    count = min(100, max(1, round(0.05 * len(ids))))
    step = len(ids) / count
    return [ids[int(k * step + step / 2)] for k in range(count)]


def _train_args(job, work: Path, epochs: int) -> argparse.Namespace:
    from fsalign.training import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--topology", "hmm" if job.unit == "phone" else "ctc", "--epochs", str(epochs), "--seed", str(job.seed)]
    if (job.output / "model" / "last.pt").is_file():
        argv.append("--resume")  # an interrupted training continues
    if job.device is not None:
        argv += ["--device", job.device]
    if not job.progress:
        argv.append("--no-progress")
    args = parser.parse_args(argv)
    args.__dict__.update(unit=job.unit, data_dir=str(work), train_part="train", dev_part="dev",
                         exp_dir=str(job.output / "model"))
    return args


def train(job, work: Path, cuts, tokenizer) -> Tuple[Path, Dict[str, Any]]:
    """Stage 4: a held-out split and a model trained on the rest (``OUTPUT/model/best.pt``, resumable).

    Returns:
      ``(best checkpoint, its dev evaluation)``.
    """
    from lhotse import CutSet

    from fsalign.training import train as run_training

    model, eval_path = job.output / "model", job.output / "model" / "eval.json"
    if eval_path.is_file():
        return model / "best.pt", json.loads(eval_path.read_text())
    long_ids = [c.id for c in cuts if job.long_audio.is_long(c.duration)]
    if long_ids:
        logger.info("%d long recordings (over %g s) are aligned but not trained on", len(long_ids),
                    job.long_audio.threshold_s)
        cuts = CutSet.from_cuts(c for c in cuts if not job.long_audio.is_long(c.duration))
        if not len(cuts):
            raise FsalignError(f"every recording is longer than {job.long_audio.threshold_s:g} s, and a model cannot "
                               f"be trained on long recordings: give a trained --checkpoint, or add shorter "
                               f"utterances (or raise --long-threshold)")
    dev_ids = set(split_dev(cuts.ids))
    train_cuts = CutSet.from_cuts(c for c in cuts if c.id not in dev_ids)
    dev_cuts = CutSet.from_cuts(c for c in cuts if c.id in dev_ids) if dev_ids else train_cuts.subset(first=1)
    for name, part in (("train", train_cuts), ("dev", dev_cuts)):
        if not (work / f"cuts_{name}.jsonl.gz").is_file():
            _write_cuts(part, work / f"cuts_{name}.jsonl.gz")
    minutes = sum(c.duration for c in train_cuts) / 60
    epochs = job.epochs or default_epochs(minutes)
    logger.info("training a %s model on %d utterances (%.1f min) for %d epochs, %d held out", job.unit,
                len(train_cuts), minutes, epochs, len(dev_cuts))
    run_training(_train_args(job, work, epochs))
    return model / "best.pt", json.loads(eval_path.read_text())


def align(job, work: Path, cuts, corpus_cuts, tokenizer, checkpoint: Path) -> List[AlignResult]:
    """Stage 5: every cut aligned (journaled), then the outputs of :mod:`fsalign.aligning.corpus_output`."""
    import torch
    from tqdm import tqdm

    from fsalign.checkpoint import load_checkpoint

    device = job.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_checkpoint(checkpoint, device)
    aligner = Aligner(make_scorer(loaded, job.scores, grad_source=job.grad_source, aed_weight=job.aed_weight,
                                  mismatch=MismatchOptions() if job.allow_mismatch else None,
                                  long_audio=job.long_audio),
                      tokenizer, job.boundaries, job.long_audio)
    header = {"checkpoint": str(checkpoint), "size": checkpoint.stat().st_size, **aligner.settings()}
    try:
        journal = Journal(work / "align.journal.jsonl", header)
    except FsalignError:  # written with other alignment settings (another version's defaults): align again
        logger.info("the alignment journal holds other settings; aligning every recording again")
        journal = Journal(work / "align.journal.jsonl", header, restart=True)
    batch_duration = 0.0 if job.scores != "posterior" and aligner.device.type == "cpu" else 100.0  # as fsalign align
    try:
        done = set(journal.offsets)
        bar = tqdm(total=len(cuts), initial=len(done), unit="utt", desc="align", disable=not job.progress)
        for results in align_cuts(aligner, cuts, max_duration=batch_duration, done=done):
            journal.append(results)
            bar.update(len(results))
        bar.close()
        results = [journal.get(cut_id) for cut_id in cuts.ids]
    finally:
        journal.close()
    outputs = {c.id: c for c in corpus_cuts}  # without features: the manifest points at the audio
    token_tier = "phones" if tokenizer.unit == "phone" else "tokens"
    write_corpus_outputs(job.output, results, [outputs[c] for c in cuts.ids], token_tier)
    return results


def _measure(job, results: List[AlignResult], cuts) -> Optional[Dict[str, Any]]:
    """``fsalign tse --ref REFERENCE --hyp OUTPUT/alignments.ctm``, with the token tiers as the hypothesis' tokens."""
    if job.reference is None:
        return None
    from fsalign.aligning.corpus_output import recording_tokens
    from fsalign.results.compare import compare_alignments, with_tokens
    from fsalign.results.formats import read_utterances

    reference = read_utterances(job.reference)
    hyp = with_tokens(read_utterances(job.output / CTM_NAME), recording_tokens(results, cuts))
    comparison = compare_alignments(reference, hyp)
    out = {k: v for k, v in comparison.to_dict().items() if k not in ("skipped", "only_in_ref")}
    out["num_skipped"], out["num_only_in_ref"] = len(comparison.skipped), len(comparison.only_in_ref)
    if job.allow_mismatch:  # the words differ where words were skipped: compare the words both sides have
        from fsalign.results.matched import compare_matched

        out["matched"] = compare_matched(reference, hyp).to_dict()
    return out


def _mismatch_report(corpus, results: List[AlignResult]) -> Dict[str, Any]:
    """The skipped transcript words per file (``output_stem``) and the untranscribed seconds."""
    from fsalign.aligning.corpus_output import output_stem

    stems = {c.id: output_stem(c) for c in corpus.cuts}
    skipped: Dict[str, List[str]] = {}
    seconds = 0.0
    for r in results:
        if r.times is None or r.times.mismatch is None:
            continue
        if r.times.mismatch.skipped:
            skipped.setdefault(stems.get(r.cut_id, r.cut_id), []).extend(w.label for w in r.times.mismatch.skipped)
        seconds += sum(s.end - s.start for s in r.times.mismatch.untranscribed)
    return {"skipped_words": dict(sorted(skipped.items())), "num_skipped": sum(map(len, skipped.values())),
            "untranscribed_seconds": round(seconds, 3)}


def _confidence_report(corpus, results: List[AlignResult]) -> Optional[Dict[str, Any]]:
    """Mean word confidence, per file, and the words below LOW_CONFIDENCE (file, word, times in the file)."""
    from fsalign.aligning.corpus_output import output_stem
    from fsalign.results.confidence import LOW_CONFIDENCE

    cuts = {c.id: c for c in corpus.cuts}
    files: Dict[str, List[float]] = {}
    low = []
    for r in results:
        if r.times is None:
            continue
        cut = cuts.get(r.cut_id)
        stem, offset = (output_stem(cut), cut.start) if cut is not None else (r.cut_id, 0.0)
        for w in r.times.words:
            if w.score is None:
                continue
            files.setdefault(stem, []).append(w.score)
            if w.score < LOW_CONFIDENCE:
                low.append({"file": stem, "word": w.label, "start": round(offset + w.start, 3),
                            "end": round(offset + w.end, 3), "confidence": w.score})
    scores = [c for values in files.values() for c in values]
    if not scores:
        return None
    return {"mean_word": round(sum(scores) / len(scores), 4), "num_words": len(scores), "threshold": LOW_CONFIDENCE,
            "num_low": len(low), "files": {f: round(sum(v) / len(v), 4) for f, v in sorted(files.items())},
            "low_words": sorted(low, key=lambda w: (w["file"], w["start"]))}


def report(job, corpus, results: List[AlignResult], oovs: Dict[str, List[str]], evaluation: Optional[dict],
           checkpoint: Path, stage_seconds: Dict[str, float], total_seconds: Seconds) -> Dict[str, Any]:
    """The report (``OUTPUT/report.json`` and ``report.txt``): what was aligned, skipped and measured."""
    failed = [{"cut": r.cut_id, "reason": r.error} for r in results if r.error is not None]
    aligned = [r for r in results if r.error is None]
    warnings = []
    if evaluation is not None and evaluation.get("ler") is not None and evaluation["ler"] > UNTRAINED_LER:
        warnings.append(f"the model looks untrained (dev label error rate {evaluation['ler']:.2f}): do not trust its "
                        f"times; train longer (--epochs) or on more audio")
    out = {
        "corpus": str(job.corpus), "layout": corpus.layout, "output": str(job.output), "checkpoint": str(checkpoint),
        "utterances": len(results), "aligned": len(aligned),
        "aligned_seconds": round(sum(r.duration for r in aligned), 3),
        "failed": failed, "skipped_files": [s.__dict__ for s in corpus.skipped],
        "skipped_by_reason": dict(Counter(s.reason.split(":")[0] for s in corpus.skipped)),
        "oov_words": sorted(oovs), "model_dev": evaluation, "reference": _measure(job, results, corpus.cuts),
        "seconds": {"total": total_seconds, **stage_seconds}, "warnings": warnings, "nothing_to_do": False,
    }
    if job.allow_mismatch:
        out["mismatch"] = _mismatch_report(corpus, results)
    out["confidence"] = _confidence_report(corpus, results)
    long = [r.cut_id for r in results if job.long_audio.is_long(r.duration)]
    if long:
        out["long_recordings"] = {"threshold_s": job.long_audio.threshold_s, "cuts": long,
                                  "aligned": sum(1 for r in results if r.cut_id in set(long) and r.error is None),
                                  "trained_on": False if job.checkpoint is None else None}
    with atomic_open(job.output / "report.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(summary_lines(out)) + "\n")
    with atomic_open(job.output / "report.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(out, indent=2) + "\n")
    return out


def summary_lines(report: Dict[str, Any]) -> List[str]:
    """The human-readable report."""
    lines = [f"aligned {report['aligned']} of {report['utterances']} utterances "
             f"({report['aligned_seconds'] / 60:.1f} min of audio) from {report['corpus']} ({report['layout']} layout)"]
    if report["skipped_files"]:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report["skipped_by_reason"].items()))
        lines.append(f"skipped {len(report['skipped_files'])} files: {kinds}")
    if report["failed"]:
        kinds = Counter(f["reason"].split(":")[0] for f in report["failed"])
        what = ", ".join(f"{n} {k}" for k, n in kinds.items())
        lines.append(f"not aligned: {len(report['failed'])} utterances ({what})")
    if report["oov_words"]:
        lines.append(f"{len(report['oov_words'])} words outside the lexicon pronounced by G2P (oovs_found.txt)")
    dev = report.get("model_dev")
    if dev and dev.get("ler") is not None:
        tse = f", dev TSE {dev['tse_boundary_ms']:.1f} ms" if dev.get("tse_boundary_ms") is not None else ""
        lines.append(f"model: dev label error rate {dev['ler']:.3f} on {dev.get('utterances')} held-out "
                     f"utterances{tse}")
    mismatch = report.get("mismatch")
    if mismatch is not None:
        lines.append(f"transcripts vs audio: {mismatch['num_skipped']} transcript words skipped in "
                     f"{len(mismatch['skipped_words'])} files (report.json: mismatch), "
                     f"{mismatch['untranscribed_seconds']:.1f} s of untranscribed audio")
    confidence = report.get("confidence")
    if confidence:
        worst = sorted(confidence["files"].items(), key=lambda item: (item[1], item[0]))[:5]
        lines.append(f"word confidence: mean {confidence['mean_word']:.3f} over {confidence['num_words']} words, "
                     f"{confidence['num_low']} below {confidence['threshold']:g} (report.json: confidence, low_words); "
                     f"lowest files: " + ", ".join(f"{f} {c:.3f}" for f, c in worst))
    long = report.get("long_recordings")
    if long:
        trained = "; not trained on" if long.get("trained_on") is False else ""
        lines.append(f"long recordings (over {long['threshold_s']:g} s): {long['aligned']} of {len(long['cuts'])} "
                     f"aligned with the windowed encoder and the bounded-memory Viterbi{trained}")
    ref = report.get("reference")
    if ref:
        from fsalign.results.compare import error_lines

        lines.append(f"against the reference: {ref['num_words']} words of {ref['num_utterances']} utterances "
                     f"compared ({ref.get('num_skipped', 0)} utterances with other words skipped)")
        lines += [f"  {line}" for line in error_lines(ref)]
    matched = (ref or {}).get("matched")
    if matched and matched.get("tse_boundary_ms") is not None:
        lines.append(f"against the reference, the words both have: TSE boundary {matched['tse_boundary_ms']:.1f} "
                     f"ms, centre {matched['tse_centre_ms']:.1f} ms over {matched['num_words']} words")
    seconds = report["seconds"]
    lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    lines += [f"WARNING: {w}" for w in report["warnings"]]
    return lines
