"""LibriSpeech-layout corpus preparation in numbered, resumable stages.

Stage 0 (only with ``download=True``): lhotse ``download_librispeech``.
Stage 1: lhotse ``prepare_librispeech`` -> ``DATA/manifests/librispeech_{recordings,supervisions}_<part>.jsonl.gz``
(with reference word alignments when an ``alignments_dir`` is given).
Stage 2: 80-dim fbank features -> ``DATA/feats_<part>.lca`` (or a directory of them with
several jobs; lilcom chunky) and cuts
``DATA/cuts_<part>.jsonl.gz``.
Stage 3: tokenizers -> ``DATA/lang_<unit>/`` for units ``char``, ``phone`` (lexicon check),
``spm`` and ``bpe`` (SentencePiece trained on the training part's text).

A stage whose outputs exist is skipped (delete them to redo it). Outputs are written
under temporary names and renamed when complete, so an interrupted run resumes cleanly.
Paths inside the manifests are kept as given (relative paths stay relative to the
working directory the preparation ran in).
"""
import argparse
import logging
import multiprocessing
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from fsalign.corpus.cuts import SAMPLING_RATE, default_extractor
from fsalign.corpus.normalize import spoken_words
from fsalign.corpus.tokenizers import (
    CharTokenizer,
    PhoneTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
)
from fsalign.errors import FsalignError
from fsalign.util import HelpFormatter, Pathlike, check_option, check_output_path, is_positive_int

__all__ = [
    "UNITS",
    "prepare_manifests",
    "compute_features",
    "compute_cut_features",
    "prepare_tokenizers",
    "read_texts",
    "add_arguments",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

UNITS = ("char", "phone", "spm", "bpe")


def _manifest_paths(output_dir: Path, part: str) -> Dict[str, Path]:
    base = output_dir / "manifests"
    return {
        "recordings": base / f"librispeech_recordings_{part}.jsonl.gz",
        "supervisions": base / f"librispeech_supervisions_{part}.jsonl.gz",
    }


def prepare_manifests(corpus_dir: Pathlike, parts: Sequence[str], output_dir: Pathlike,
                      alignments_dir: Optional[Pathlike] = None, num_jobs: int = 1) -> None:
    """Stage 1: recording and supervision manifests with lhotse ``prepare_librispeech``.

    Args:
      corpus_dir: directory holding ``<part>/<speaker>/<chapter>/*.flac`` and ``*.trans.txt``.
      parts: part names, e.g. ``train-clean-5``; each must be a directory of ``corpus_dir``.
      output_dir: ``DATA``; manifests go to ``DATA/manifests/``.
      alignments_dir: directory with the same layout holding ``<speaker>-<chapter>.alignment.txt``
        files (lhotse's LibriSpeech alignment format); None for no reference alignments.
      num_jobs: threads for parsing utterances.

    Raises:
      FsalignError: a part directory is missing or holds no utterances.
    """
    from lhotse.recipes import prepare_librispeech

    corpus_dir, output_dir = Path(corpus_dir), Path(output_dir)
    for part in parts:
        paths = _manifest_paths(output_dir, part)
        if all(p.is_file() for p in paths.values()):
            logger.info("stage 1: manifests of %s exist, skipping", part)
            continue
        if not (corpus_dir / part).is_dir():
            found = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir()) if corpus_dir.is_dir() else []
            raise FsalignError(f"expected part directory {corpus_dir / part}; {corpus_dir} holds {found}")
        tmp = output_dir / "manifests" / f".tmp_{part}"
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("stage 1: preparing manifests of %s", part)
        result = prepare_librispeech(
            corpus_dir, alignments_dir=alignments_dir, dataset_parts=[part], output_dir=tmp, num_jobs=num_jobs
        )
        if part not in result or len(result[part]["supervisions"]) == 0:
            raise FsalignError(f"no utterances found in {corpus_dir / part} (expected */*/*.trans.txt and .flac files)")
        for kind, path in paths.items():
            (tmp / path.name).replace(path)
        shutil.rmtree(tmp, ignore_errors=True)
        sups = result[part]["supervisions"]
        aligned = sum(1 for s in sups if s.alignment and "word" in s.alignment)
        logger.info("stage 1: %s: %d utterances, %d with word alignments", part, len(sups), aligned)
        if alignments_dir is not None and aligned == 0:
            logger.warning("stage 1: no alignment files for %s found under %s", part, alignments_dir)


def compute_features(output_dir: Pathlike, parts: Sequence[str], num_jobs: int = 1) -> None:
    """Stage 2: fbank features (:func:`fsalign.corpus.cuts.default_extractor`) and cut manifests.

    Writes ``DATA/feats_<part>.lca`` (``LilcomChunkyWriter``; ``DATA/feats_<part>/`` with
    ``num_jobs > 1``) and ``DATA/cuts_<part>.jsonl.gz``;
    one cut per utterance, cut id = utterance id. Audio that is not 16 kHz is resampled.
    """
    from lhotse import CutSet, load_manifest

    output_dir = Path(output_dir)
    for part in parts:
        cuts_path = output_dir / f"cuts_{part}.jsonl.gz"
        if cuts_path.is_file():
            logger.info("stage 2: %s exists, skipping", cuts_path)
            continue
        paths = _manifest_paths(output_dir, part)
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FsalignError(f"stage 2 needs the stage-1 manifests of {part}; missing: {missing}")
        cuts = CutSet.from_manifests(
            recordings=load_manifest(paths["recordings"]), supervisions=load_manifest(paths["supervisions"])
        ).trim_to_supervisions(keep_overlapping=False)
        logger.info("stage 2: computing features of %s", part)
        computed = compute_cut_features(cuts, output_dir / f"feats_{part}", num_jobs)
        tmp = cuts_path.with_name(".tmp_" + cuts_path.name)
        computed.to_file(tmp)
        tmp.replace(cuts_path)


def compute_cut_features(cuts, storage: Path, num_jobs: int = 1, progress: bool = False):
    """The training fbank (:func:`fsalign.corpus.cuts.default_extractor`) of every cut, stored with lilcom.

    Audio that is not 16 kHz is resampled first. Features go to ``<storage>.lca`` (one job) or a
    folder ``<storage>/`` (several); leftovers of an interrupted run there are removed first.

    Args:
      cuts: a CutSet.
      storage: where the features go (without suffix).
      num_jobs: worker processes (one torch thread each).
      progress: show lhotse's progress bar.

    Returns:
      The cuts with features, in the same order; cuts whose audio cannot be read are left out
      (logged).
    """
    from lhotse import CutSet, LilcomChunkyWriter

    cuts = CutSet.from_cuts([c if c.sampling_rate == SAMPLING_RATE else c.resample(SAMPLING_RATE) for c in cuts])
    shutil.rmtree(storage, ignore_errors=True)
    storage.with_suffix(".lca").unlink(missing_ok=True)
    # One torch thread per job: fbank of one utterance is too small to gain from threads,
    # and worker processes with several threads each can stall (lhotse warns about it).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    executor = None
    if num_jobs > 1:
        executor = ProcessPoolExecutor(num_jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_single_thread)
    try:
        computed = cuts.compute_and_store_features(
            extractor=default_extractor(), storage_path=storage, num_jobs=num_jobs,
            storage_type=LilcomChunkyWriter, progress_bar=progress, executor=executor,
        )
    finally:
        torch.set_num_threads(threads)
        if executor is not None:
            executor.shutdown()
    lost = sorted(set(cuts.ids) - set(computed.ids))
    if lost:  # lhotse drops cuts whose audio cannot be read
        logger.warning("%d cut(s) left out, audio unreadable: %s", len(lost), lost[:20])
    order = {cut_id: k for k, cut_id in enumerate(cuts.ids)}
    return CutSet.from_cuts(sorted(computed, key=lambda c: order[c.id]))


def _single_thread() -> None:
    torch.set_num_threads(1)


def read_texts(output_dir: Pathlike, part: str) -> List[str]:
    """Transcripts of a part, read from its stage-1 supervision manifest."""
    from lhotse import load_manifest

    path = _manifest_paths(Path(output_dir), part)["supervisions"]
    if not path.is_file():
        raise FsalignError(f"expected the stage-1 supervision manifest {path}; run stage 1 first")
    return [s.text for s in load_manifest(path)]


def _check_oov(tokenizer: Tokenizer, texts: Sequence[str], lang_dir: Path, oov: str) -> Optional[str]:
    """Find what ``tokenizer`` cannot encode; raise (``oov="error"``) or return the ``oov.txt`` text."""
    per_text = [tokenizer.find_oov(t) for t in texts]
    counts = Counter(w for bad in per_text for w in bad)
    if not counts:
        return None
    listing = "".join(f"{w} {n}\n" for w, n in counts.most_common())
    shown = ", ".join(f"{w} ({n})" for w, n in counts.most_common(30))
    message = (
        f"{tokenizer.unit}: {len(counts)} out-of-vocabulary item(s) in {sum(map(bool, per_text))} utterance(s), "
        f"all listed in {lang_dir / 'oov.txt'}: {shown}{' ...' if len(counts) > 30 else ''}"
    )
    if oov == "error":
        lang_dir.mkdir(parents=True, exist_ok=True)
        (lang_dir / "oov.txt").write_text(listing)
        raise FsalignError(message + "; extend the lexicon (--lexicon) or pass --oov skip")
    logger.warning("%s; these utterances will be skipped (oov=skip)", message)
    return listing


def prepare_tokenizers(output_dir: Pathlike, parts: Sequence[str], train_part: str, units: Sequence[str] = UNITS,
                       vocab_size: int = 500, lexicon: Optional[Pathlike] = None,
                       oov: str = "error") -> Dict[str, Tokenizer]:
    """Stage 3: build, check and save tokenizers to ``DATA/lang_<unit>/``.

    SentencePiece models (``spm`` = unigram, ``bpe``) are trained on ``train_part``'s
    text. Every tokenizer is then checked against the text of all ``parts``: items it
    cannot encode are written to ``lang_<unit>/oov.txt`` and either raise
    (``oov="error"``) or are logged, the tokenizer keeping ``oov="skip"`` so the data
    loader drops and reports those utterances.

    Args:
      output_dir: ``DATA`` (stage-1 manifests must exist).
      parts: parts whose text is checked.
      train_part: the part SentencePiece is trained on.
      units: any of ``char``, ``phone``, ``spm``, ``bpe``.
      vocab_size: SentencePiece vocabulary = ``num_labels`` (blank included).
      lexicon: lexicon file for ``phone`` (default: CMU dictionary).
      oov: ``"error"`` or ``"skip"``.

    Returns:
      Unit -> tokenizer (loaded from disk when the stage had been done before).

    Raises:
      FsalignError: out-of-vocabulary items with ``oov="error"``, a vocabulary too large
        for the training text, an unknown unit.
    """
    output_dir = Path(output_dir)
    unknown = [u for u in units if u not in UNITS]
    if unknown:
        raise FsalignError(f"units must be among {UNITS}, got {unknown}")
    texts = {part: [" ".join(spoken_words(t)) for t in read_texts(output_dir, part)]  # as CutDataset encodes them
             for part in dict.fromkeys([train_part, *parts])}
    all_texts = [t for part_texts in texts.values() for t in part_texts]
    tokenizers = {}
    for unit in units:
        lang_dir = output_dir / f"lang_{unit}"
        if (lang_dir / "tokenizer.json").is_file():
            tokenizers[unit] = Tokenizer.load(lang_dir)
            if unit in ("spm", "bpe") and tokenizers[unit].num_labels > vocab_size:
                logger.warning(
                    "stage 3: %s has vocab size %d, not the requested %d; delete it to retrain",
                    lang_dir, tokenizers[unit].num_labels, vocab_size,
                )  # fmt: skip
            logger.info("stage 3: %s exists, skipping", lang_dir)
            continue
        logger.info("stage 3: building the %s tokenizer", unit)
        if unit == "char":
            tokenizer: Tokenizer = CharTokenizer(oov=oov)
        elif unit == "phone":
            tokenizer = PhoneTokenizer(lexicon, oov=oov)
        else:
            model_type = "unigram" if unit == "spm" else "bpe"
            tokenizer = SentencePieceTokenizer.train(texts[train_part], vocab_size, model_type, oov=oov, clamp=True)
        listing = _check_oov(tokenizer, all_texts, lang_dir, oov)
        tmp = output_dir / f".tmp_lang_{unit}"
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save(tmp)
        if listing:
            (tmp / "oov.txt").write_text(listing)
        shutil.rmtree(lang_dir, ignore_errors=True)  # an incomplete one (no tokenizer.json) from a failed run
        tmp.replace(lang_dir)
        tokenizers[unit] = tokenizer
        logger.info("stage 3: %s: %d labels (blank included)", lang_dir, tokenizer.num_labels)
    return tokenizers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the preparation options (the recipe's command line) to ``parser``."""
    group = parser.add_argument_group("preparation")
    group.add_argument("--corpus-dir", type=Path, required=True,
                       help="LibriSpeech-layout directory holding the parts (e.g. data/LibriSpeech)")
    group.add_argument("--alignments-dir", type=Path, default=None,
                       help="reference word alignments in lhotse's LibriSpeech alignment layout")
    group.add_argument("--parts", nargs="+", required=True, help="parts to prepare, e.g. train-clean-5 dev-clean-2")
    group.add_argument("--output-dir", type=Path, required=True, help="DATA directory for manifests/features/lang")
    group.add_argument("--stage", type=int, default=1, help="first stage to run (0 = download, only with --download)")
    group.add_argument("--stop-stage", type=int, default=3, help="last stage to run")
    group.add_argument("--unit", nargs="+", choices=UNITS, default=list(UNITS), help="tokenizers to build in stage 3")
    group.add_argument("--vocab-size", type=int, default=500, help="SentencePiece vocabulary (blank included)")
    group.add_argument("--train-part", default=None,
                       help="part SentencePiece is trained on; None: the first part named train*, else the first")
    group.add_argument("--lexicon", type=Path, default=None,
                       help="lexicon file 'WORD PH1 PH2 ...'; None: the CMU dictionary")
    group.add_argument("--oov", choices=("error", "skip"), default="error",
                       help="words a tokenizer cannot encode: fail, or skip those utterances")
    group.add_argument("--num-jobs", type=int, default=1, help="parallel jobs for stages 1-2")
    group.add_argument("--download", action="store_true",
                       help="stage 0: download the parts from openslr.org into --corpus-dir's parent "
                            "(opt-in)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Run stages ``args.stage`` .. ``args.stop_stage`` with the options of :func:`add_arguments`.

    Raises:
      FsalignError: an option outside its range or a missing input, before any stage runs.
    """
    check_option("--stage", args.stage, 0 <= args.stage <= 3, "in 0..3")
    check_option("--stop-stage", args.stop_stage, args.stage <= args.stop_stage <= 3, f"in {args.stage}..3")
    check_option("--vocab-size", args.vocab_size, is_positive_int(args.vocab_size) and args.vocab_size >= 3,
                 "an integer >= 3 (blank, <unk> and a piece)")
    check_option("--num-jobs", args.num_jobs, is_positive_int(args.num_jobs), "an integer >= 1")
    if args.stage <= 1 and not args.download and not args.corpus_dir.is_dir():
        raise FsalignError(f"--corpus-dir {args.corpus_dir} is not a directory")
    if args.alignments_dir is not None and not args.alignments_dir.is_dir():
        raise FsalignError(f"--alignments-dir {args.alignments_dir} is not a directory")
    if args.lexicon is not None and not args.lexicon.is_file():
        raise FsalignError(f"--lexicon {args.lexicon} does not exist")
    check_output_path(args.output_dir, "--output-dir")
    train_part = args.train_part or next((p for p in args.parts if p.startswith("train")), args.parts[0])

    def runs(stage: int) -> bool:
        return args.stage <= stage <= args.stop_stage

    if args.download and runs(0):
        from lhotse.recipes import download_librispeech

        if args.corpus_dir.name != "LibriSpeech":
            raise FsalignError("--download unpacks into <dir>/LibriSpeech; "
                               f"--corpus-dir must end in LibriSpeech, got {args.corpus_dir}")
        download_librispeech(target_dir=args.corpus_dir.parent, dataset_parts=args.parts)
    if runs(1):
        prepare_manifests(args.corpus_dir, args.parts, args.output_dir, args.alignments_dir, args.num_jobs)
    if runs(2):
        compute_features(args.output_dir, args.parts, args.num_jobs)
    if runs(3):
        prepare_tokenizers(args.output_dir, args.parts, train_part, args.unit, args.vocab_size, args.lexicon, args.oov)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point of ``recipes/librispeech/prepare.py``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        run(args)
    except FsalignError as e:
        parser.exit(1, f"error: {e}\n")
