"""Aligning a user's own corpus in one command (``fsalign align-corpus CORPUS OUTPUT``).

What ``mfa train`` and ``mfa align`` do, in resumable stages under ``OUTPUT/work/``:

1. **load**: the corpus in any layout of :mod:`fsalign.corpus.layouts` -> mono cuts at their
   native rate (``work/corpus.jsonl.gz``); files without transcript or audio, or unreadable,
   are listed and skipped;
2. **units**: the tokenizer (the checkpoint's; else built for ``unit`` on the corpus' spoken
   words: CMU phones, characters, or SentencePiece units clamped to what the text supports);
   for phones, words no lexicon knows are pronounced by the G2P model and listed in
   ``OUTPUT/oovs_found.txt``;
3. **features**: 80-dim fbank at 16 kHz (``work/cuts_all.jsonl.gz``);
4. **train** (without a checkpoint): a held-out split (``work/cuts_train``/``cuts_dev``), then
   the recipe's converging defaults (HMM topology for phones with the prior warm-up, CTC
   otherwise) with epochs adapted to the corpus' size, resumable (``OUTPUT/model/``);
5. **align**: every cut (posterior Viterbi, or the gradient scores of ``scores``/``grad_source``),
   journaled (``work/align.journal.jsonl``), then the outputs of
   :mod:`fsalign.aligning.corpus_output` (one TextGrid per audio file mirroring the corpus, a CTM,
   Lhotse cuts) and ``OUTPUT/report.json`` / ``report.txt``.

A stage whose output exists is not redone, so a rerun after a kill continues (training with
``--resume``) and gives the same files; a rerun after success finds the report and does
nothing. The settings are recorded in ``work/settings.json``: another run with other settings
into the same folder is refused.
"""
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from fsalign.aligning import corpus_stages as stages
from fsalign.aligning.corpus_stages import default_epochs
from fsalign.errors import FsalignError
from fsalign.util import LongAudio, atomic_open, check_option, check_output_path, is_finite_number, is_positive_int

__all__ = ["UNITS", "CorpusJob", "align_corpus", "default_epochs"]

logger = logging.getLogger(__name__)

UNITS = ("phone", "char", "spm", "bpe")


@dataclass
class CorpusJob:
    """What to align and how (the options of ``fsalign align-corpus``).

    Attributes:
      corpus: the corpus folder or manifest.
      output: the output folder.
      checkpoint: a trained model to align with (then nothing is trained), or None.
      unit: the units of a model trained here: phone (HMM), char, spm or bpe (CTC).
      layout: the corpus layout, or None to detect it.
      epochs: training epochs, or None for :func:`~fsalign.aligning.corpus_stages.default_epochs`.
      num_jobs: worker processes for feature extraction.
      device: torch device, or None (cuda if available, else cpu).
      oov: words missing from the lexicon (phone units): "g2p" (pronounce them), "skip"
        (leave their utterances out) or "error".
      vocab_size: SentencePiece vocabulary (spm, bpe), clamped to what the text supports.
      reference: reference word times (any format ``fsalign tse`` reads) to measure against.
      progress: progress bars.
      seed: training seed.
      scores: "posterior", "grad" or "gradext" (:func:`~fsalign.aligning.aligner.make_scorer`).
      grad_source: "ctc", "aed", "hybrid" or None (AED when the checkpoint has a decoder, else CTC;
        a model trained here has none).
      aed_weight: λ_AED of the hybrid grad source, or None.
      allow_mismatch: transcripts may not match the audio exactly (:mod:`fsalign.engine.mismatch`, default
        penalties): untranscribed speech is given to garbage, transcript words that were not spoken are
        skipped, and the outputs and the report mark both. Training uses the transcripts as they are.
      boundaries: "viterbi" or "expected" (:data:`~fsalign.aligning.aligner.BOUNDARIES`); None:
        "expected", or "viterbi" with ``allow_mismatch``.
      long_threshold: seconds above which a recording is long (:class:`~fsalign.util.LongAudio`): its
        features are computed while aligning, it is not trained on, and it is aligned alone with the
        windowed encoder and the bounded-memory Viterbi.
    """

    corpus: Path
    output: Path
    checkpoint: Optional[Path] = None
    unit: str = "phone"
    layout: Optional[str] = None
    epochs: Optional[int] = None
    num_jobs: int = 1
    device: Optional[str] = None
    oov: str = "g2p"
    vocab_size: int = 500
    reference: Optional[Path] = None
    progress: bool = True
    seed: int = 42
    scores: str = "posterior"
    grad_source: Optional[str] = None
    aed_weight: Optional[float] = None
    allow_mismatch: bool = False
    boundaries: Optional[str] = None
    long_threshold: float = 60.0

    @property
    def long_audio(self) -> LongAudio:
        """The :class:`~fsalign.util.LongAudio` of ``long_threshold``."""
        return LongAudio(threshold_s=self.long_threshold)

    def check(self) -> None:
        """Validates every option before any work, with one line naming the option and the value.

        Raises:
          FsalignError: an option outside its range or an input that does not exist.
        """
        from fsalign.corpus.layouts import LAYOUTS

        self.corpus, self.output = Path(self.corpus), Path(self.output)
        if not self.corpus.exists():
            raise FsalignError(f"corpus {self.corpus} does not exist")
        check_option("--unit", self.unit, self.unit in UNITS, f"one of {UNITS}")
        check_option("--layout", self.layout, self.layout is None or self.layout in LAYOUTS, f"one of {LAYOUTS}")
        check_option("--epochs", self.epochs, self.epochs is None or is_positive_int(self.epochs), "an integer >= 1")
        check_option("--num-jobs", self.num_jobs, is_positive_int(self.num_jobs), "an integer >= 1")
        check_option("--oov", self.oov, self.oov in ("g2p", "skip", "error"), "one of g2p, skip, error")
        check_option("--vocab-size", self.vocab_size, is_positive_int(self.vocab_size) and self.vocab_size >= 3,
                     "an integer >= 3")
        from fsalign.aligning.aligner import BOUNDARIES, MISMATCH_NEEDS_POSTERIOR, SCORES, grad_weights, has_decoder

        check_option("--scores", self.scores, self.scores in SCORES, f"one of {SCORES}")
        check_option("--allow-mismatch", self.allow_mismatch, isinstance(self.allow_mismatch, bool), "True or False")
        if self.allow_mismatch and self.scores != "posterior":
            raise FsalignError(MISMATCH_NEEDS_POSTERIOR)
        if self.boundaries is None:
            self.boundaries = "viterbi" if self.allow_mismatch else "expected"
        check_option("--boundaries", self.boundaries, self.boundaries in BOUNDARIES, f"one of {BOUNDARIES}")
        check_option("--boundaries", self.boundaries, not (self.allow_mismatch and self.boundaries == "expected"),
                     "'viterbi' with --allow-mismatch")
        check_option("--long-threshold", self.long_threshold,
                     is_finite_number(self.long_threshold) and self.long_threshold > 0, "a number of seconds > 0")
        if self.checkpoint is not None:
            from fsalign.checkpoint import load_checkpoint

            loaded = load_checkpoint(self.checkpoint)  # a one-line FsalignError for anything that is not one
            grad_weights(self.scores, self.grad_source, self.aed_weight, has_decoder(loaded.model))
        else:
            grad_weights(self.scores, self.grad_source, self.aed_weight, False, "the model align-corpus trains")
        if self.reference is not None and not Path(self.reference).exists():
            raise FsalignError(f"reference {self.reference} does not exist")
        if self.output.exists() and not self.output.is_dir():
            raise FsalignError(f"output {self.output} is a file, not a folder")
        check_output_path(self.output / "work", "output")
        if self.output.resolve() == self.corpus.resolve():
            raise FsalignError("the output folder must not be the corpus folder")
        try:
            (self.output / "work").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FsalignError(f"cannot create the output folder {self.output}: {e.strerror or e}") from None

    def settings(self) -> Dict[str, Any]:
        """What determines the outputs (recorded in ``work/settings.json``)."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
             if k not in ("output", "progress", "num_jobs", "device", "reference")}
        for k, default in (("scores", "posterior"), ("grad_source", None), ("aed_weight", None),
                           ("boundaries", "viterbi")):
            if d[k] == default:  # recorded when set, so that the folders of earlier runs stay valid
                del d[k]
        if not self.allow_mismatch:
            del d["allow_mismatch"]  # the settings of runs from before the option
        if self.long_threshold == LongAudio().threshold_s:
            del d["long_threshold"]
        d["corpus"] = str(Path(self.corpus).resolve())
        if self.checkpoint is not None:
            stat = Path(self.checkpoint).stat()
            d["checkpoint"] = {"path": str(Path(self.checkpoint).resolve()), "size": stat.st_size,
                               "mtime_ns": stat.st_mtime_ns}
        return d


@dataclass
class _Clock:
    started: float = field(default_factory=time.perf_counter)
    stages: Dict[str, float] = field(default_factory=dict)

    def done(self, stage: str, since: float) -> None:
        self.stages[stage] = round(time.perf_counter() - since, 1)


ALIGNMENT_SETTINGS = ("scores", "grad_source", "aed_weight", "allow_mismatch", "boundaries")
"""The settings that only the alignment stage depends on: a rerun that changes only these realigns
with the earlier run's features and model."""


def _check_settings(job: CorpusJob) -> None:
    path = job.output / "work" / "settings.json"
    settings = json.loads(json.dumps(job.settings()))
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier == settings:
            return

        def upstream(d: Dict[str, Any]) -> Dict[str, Any]:
            return {k: v for k, v in d.items() if k not in ALIGNMENT_SETTINGS}

        if upstream(earlier) != upstream(settings):
            raise FsalignError(f"{job.output} holds a run with other settings or another corpus; choose another "
                               f"output folder, or delete {job.output / 'work'} and {job.output / 'report.json'}")
        logger.info("%s: other alignment settings than the earlier run's; aligning again with its features and "
                    "model", job.output)
        for stale in (job.output / "report.json", job.output / "work" / "align.journal.jsonl"):
            stale.unlink(missing_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def align_corpus(job: CorpusJob) -> Dict[str, Any]:
    """Runs (or continues) the stages of the module docstring.

    Args:
      job: the options; checked first.

    Returns:
      The report (also ``OUTPUT/report.json``); ``report["nothing_to_do"]`` is True when an
      earlier run had finished.

    Raises:
      FsalignError: an unusable option or input, with a one-line reason.
    """
    job.check()
    report_path = job.output / "report.json"
    _check_settings(job)
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        report["nothing_to_do"] = True
        return report
    clock = _Clock()
    work = job.output / "work"
    t = time.perf_counter()
    corpus = stages.load(job, work)
    clock.done("load", t)
    t = time.perf_counter()
    tokenizer, oovs = stages.units(job, work, corpus.cuts)
    clock.done("units", t)
    t = time.perf_counter()
    cuts = stages.features(job, work, corpus.cuts)
    clock.done("features", t)
    checkpoint, evaluation = job.checkpoint, None
    if checkpoint is None:
        t = time.perf_counter()
        checkpoint, evaluation = stages.train(job, work, cuts, tokenizer)
        clock.done("train", t)
    t = time.perf_counter()
    results = stages.align(job, work, cuts, corpus.cuts, tokenizer, Path(checkpoint))
    clock.done("align", t)
    report = stages.report(job, corpus, results, oovs, evaluation, Path(checkpoint), clock.stages,
                           round(time.perf_counter() - clock.started, 1))
    return report


def summary_lines(report: Dict[str, Any]) -> List[str]:
    """The report as the lines ``fsalign align-corpus`` prints (and writes to ``report.txt``)."""
    return stages.summary_lines(report)
