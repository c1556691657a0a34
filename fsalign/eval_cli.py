"""``fsalign tse`` and ``fsalign plot``: judging and looking at alignments.

``fsalign tse --ref REF --hyp HYP [--json OUT]`` compares the word times of two alignments
(each a CTM file, a folder of TextGrids, LibriSpeech ``.alignment.txt`` files or lhotse cuts
with alignments; :mod:`fsalign.formats`) with :func:`compare_alignments`: the time stamp
error of appendix A.4.2 (boundary and centre), the silence ratio and mean word/token
durations of both sides, and which utterances could not be compared.

``fsalign plot`` draws the features, score matrix and alignment of one cut
(:func:`fsalign.plot.plot_cut_alignment`).
"""
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import click

__all__ = ["AlignmentComparison", "SideStats", "compare_alignments", "tse", "plot"]

logger = logging.getLogger(__name__)


@dataclass
class SideStats:
    """Statistics of one side (reference or hypothesis) over the compared utterances.

    Attributes:
      silence_ratio: seconds not covered by any word / total seconds (None without utterances).
      token_silence_ratio: seconds not covered by any token / total seconds, where every
        compared utterance of this side has token times (else None). For a CTC alignment the
        token spans are the frames that emit a label, so this is the paper's "Sil. ratio" (the
        share of blank frames, Table 14), while ``silence_ratio`` counts blank frames inside a
        word as speech.
      word_duration_ms: mean word duration.
      token_duration_ms: mean token duration (None if this side has no token times).
      num_tokens: tokens behind ``token_duration_ms``.
    """

    silence_ratio: Optional[float] = None
    token_silence_ratio: Optional[float] = None
    word_duration_ms: Optional[float] = None
    token_duration_ms: Optional[float] = None
    num_tokens: int = 0


@dataclass
class AlignmentComparison:
    """What :func:`compare_alignments` measures (times in milliseconds).

    Attributes:
      tse_boundary_ms: TSE of A.4.2: sum over words of |Δstart| + |Δend|, over 2 N_words.
      tse_centre_ms: mean |Δcentre| over words.
      num_words: words compared.
      num_utterances: utterances compared (same word sequence on both sides).
      ref, hyp: :class:`SideStats` of each side over the compared utterances.
      durations_from_word_ends: compared utterances whose length neither side gave (two
        CTMs): their length is the later of the two last word ends.
      skipped: utterance id -> why it was not compared (word sequences differ).
      only_in_ref, only_in_hyp: utterance ids present on one side only.
    """

    tse_boundary_ms: Optional[float]
    tse_centre_ms: Optional[float]
    num_words: int
    num_utterances: int
    ref: SideStats
    hyp: SideStats
    durations_from_word_ends: int = 0
    skipped: Dict[str, str] = field(default_factory=dict)
    only_in_ref: List[str] = field(default_factory=list)
    only_in_hyp: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _covered(spans, duration: float) -> float:
    """Seconds of [0, duration] covered by the union of ``spans``."""
    total, reach = 0.0, 0.0
    for span in sorted(spans, key=lambda s: s.start):
        start, end = max(span.start, reach, 0.0), min(span.end, duration)
        if end > start:
            total += end - start
        reach = max(reach, min(span.end, duration))
    return total


def _mismatch(ref_words: List[str], hyp_words: List[str]) -> Optional[str]:
    if ref_words == hyp_words:
        return None
    if len(ref_words) != len(hyp_words):
        return f"words differ: {len(ref_words)} in the reference, {len(hyp_words)} in the hypothesis"
    i = next(i for i, (r, h) in enumerate(zip(ref_words, hyp_words)) if r != h)
    return f"words differ: word {i + 1} is {ref_words[i]!r} in the reference, {hyp_words[i]!r} in the hypothesis"


def compare_alignments(ref: Mapping, hyp: Mapping) -> AlignmentComparison:
    """Time stamp error and silence/duration statistics of ``hyp`` w.r.t. ``ref`` (A.4.2).

    Utterances are matched by id. One whose word sequences differ (compared
    case-insensitively, silence already dropped by the readers) is skipped and listed;
    the TSE needs a one-to-one word correspondence. The silence ratio of a side is the
    fraction of the compared utterances' length covered by none of its words; an
    utterance's length is the reference's duration, else the hypothesis', else (two CTMs)
    the later of the two last word ends (so leading silence counts, trailing silence after
    the later side's last word does not).

    Args:
      ref: utterance id -> :class:`fsalign.formats.UtteranceTimes` (reference).
      hyp: utterance id -> :class:`fsalign.formats.UtteranceTimes` (hypothesis).

    Returns:
      :class:`AlignmentComparison`.
    """
    from fsalign.metrics import Average, TimeStampError, average_token_duration, time_stamp_error

    result = AlignmentComparison(None, None, 0, 0, SideStats(), SideStats())
    result.only_in_ref = [u for u in ref if u not in hyp]
    result.only_in_hyp = [u for u in hyp if u not in ref]
    tse = TimeStampError(0.0, 0.0, 0)
    silence = {"ref": 0.0, "hyp": 0.0}
    token_silence = {"ref": 0.0, "hyp": 0.0}
    all_tokens = {"ref": True, "hyp": True}
    length = 0.0
    words = {"ref": Average(0.0, 0), "hyp": Average(0.0, 0)}
    tokens = {"ref": Average(0.0, 0), "hyp": Average(0.0, 0)}
    for utt_id, r in ref.items():
        h = hyp.get(utt_id)
        if h is None:
            continue
        reason = _mismatch([w.label.casefold() for w in r.words], [w.label.casefold() for w in h.words])
        if reason is not None:
            result.skipped[utt_id] = reason
            continue
        tse = tse + time_stamp_error([r.words], [h.words])
        duration = r.duration if r.duration is not None else h.duration
        if duration is None:
            duration = max([w.end for w in r.words + h.words] + [0.0])
            result.durations_from_word_ends += 1
        length += duration
        for side, utt in (("ref", r), ("hyp", h)):
            silence[side] += duration - _covered(utt.words, duration)
            if utt.tokens:
                token_silence[side] += duration - _covered(utt.tokens, duration)
            elif utt.words:  # words but no token times: no token-level ratio for this side
                all_tokens[side] = False
            words[side] = words[side] + average_token_duration([utt.words])
            tokens[side] = tokens[side] + average_token_duration([utt.tokens])
        result.num_utterances += 1
    result.num_words = tse.num_words
    if tse.num_words:
        result.tse_boundary_ms, result.tse_centre_ms = 1000 * tse.boundary, 1000 * tse.centre
    for side, stats in (("ref", result.ref), ("hyp", result.hyp)):
        stats.silence_ratio = silence[side] / length if length > 0 else None
        stats.token_silence_ratio = token_silence[side] / length if length > 0 and all_tokens[side] else None
        stats.word_duration_ms = 1000 * words[side].value if words[side].count else None
        stats.token_duration_ms = 1000 * tokens[side].value if tokens[side].count else None
        stats.num_tokens = tokens[side].count
    return result


def _fmt(value: Optional[float], unit: str = " ms", scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"


def _summary(c: AlignmentComparison) -> str:
    return "\n".join([
        f"utterances compared: {c.num_utterances}, skipped (words differ): {len(c.skipped)}, "
        f"only in REF: {len(c.only_in_ref)}, only in HYP: {len(c.only_in_hyp)}",
        f"words compared: {c.num_words}",
        f"TSE boundary: {_fmt(c.tse_boundary_ms)}, centre: {_fmt(c.tse_centre_ms)}",
        f"silence ratio: REF {_fmt(c.ref.silence_ratio, ' %', 100)}, HYP {_fmt(c.hyp.silence_ratio, ' %', 100)}",
        f"silence ratio between tokens: REF {_fmt(c.ref.token_silence_ratio, ' %', 100)}, "
        f"HYP {_fmt(c.hyp.token_silence_ratio, ' %', 100)}",
        f"word duration: REF {_fmt(c.ref.word_duration_ms)}, HYP {_fmt(c.hyp.word_duration_ms)}",
        f"token duration: REF {_fmt(c.ref.token_duration_ms)}, HYP {_fmt(c.hyp.token_duration_ms)}",
    ])


_MAX_LISTED = 10
_ALIGNMENT_PATH = click.Path(exists=True, path_type=Path)


@click.command("tse", short_help="Time stamp error, silence ratio and durations of HYP vs REF word times.")
@click.option("--ref", "ref_path", type=_ALIGNMENT_PATH, required=True,
              help="reference alignment: a .ctm file, a folder of <utt>.TextGrid files, LibriSpeech "
                   ".alignment.txt files (a file or a folder searched recursively) or lhotse cuts "
                   "(.jsonl.gz) with alignment['word'] (required; no default)")
@click.option("--hyp", "hyp_path", type=_ALIGNMENT_PATH, required=True,
              help="hypothesis alignment, in any of the formats of --ref (required; no default)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write every number (and the skipped/missing utterance ids) to this JSON file "
                   "(default: none, print only)")
def tse(ref_path: Path, hyp_path: Path, json_path: Optional[Path]):
    """Time stamp error of HYP's word times w.r.t. REF's (appendix A.4.2), in ms.

    Prints the TSE on word boundaries ((|Δstart| + |Δend|) / 2 per word) and on word
    centres, the silence ratio (share of the utterance covered by no word) and the mean
    word and token durations of both sides, the number of words compared, and the
    utterances that could not be compared (word sequences differ, or present on one side
    only). Utterances are matched by id, words case-insensitively; silence labels ("",
    <eps>, sil, sp) are ignored. A CTM carries no utterance length: for two CTMs the
    later last word end stands in for it. Exits 1 when no utterance could be compared.
    """
    from fsalign.errors import FsalignError
    from fsalign.formats import read_utterances

    try:
        ref = read_utterances(ref_path)
        hyp = read_utterances(hyp_path)
    except FsalignError as e:
        raise click.ClickException(str(e)) from None
    result = compare_alignments(ref, hyp)
    for utt_id, reason in list(result.skipped.items())[:_MAX_LISTED]:
        logger.warning("utterance %s not compared: %s", utt_id, reason)
    if len(result.skipped) > _MAX_LISTED:
        logger.warning("... and %d more utterances not compared (see --json)", len(result.skipped) - _MAX_LISTED)
    click.echo(_summary(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.num_utterances == 0:
        raise click.ClickException(
            f"no utterance could be compared: {len(ref)} in REF, {len(hyp)} in HYP, "
            f"{len(set(ref) & set(hyp))} common ids, {len(result.skipped)} with different words")


def _find_cut(cuts_path: Path, cut_id: str):
    from lhotse import CutSet

    try:
        cuts = CutSet.from_file(cuts_path)
        for cut in cuts:
            if cut.id == cut_id:
                return cut
    except Exception as e:
        raise click.ClickException(f"{cuts_path}: not a readable lhotse cut manifest: {e}") from None
    raise click.ClickException(f"cut {cut_id} is not in {cuts_path}")


@click.command("plot")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="training checkpoint (EXP/best.pt) (required; no default)")
@click.option("--cuts", "cuts_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="lhotse cut manifest (.jsonl.gz), with or without precomputed features (required; no default)")
@click.option("--cut-id", required=True, help="id of the cut to draw (required; no default)")
@click.option("--scores", "kind", type=click.Choice(["posterior", "grad", "gradext"]), default="posterior",
              show_default=True,
              help="score matrix: the model's posteriors (Viterbi under --topology), or the gradient "
                   "scores G aligned with GradScore (grad) or GradScoreExt (gradext)")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="image file; the format follows the suffix (.png, .pdf, .svg) (required; no default)")
@click.option("--ref", "ref_path", type=_ALIGNMENT_PATH, default=None,
              help="reference word times to draw (a .ctm, TextGrid folder, LibriSpeech alignments or cuts "
                   "with alignments) (default: none)")
@click.option("--topology", type=click.Choice(["ctc", "hmm", "relaxed"]), default=None,
              help="topology of the posterior alignment (default: the one the model was trained with, "
                   "with its training posterior/transition scales; another topology is used with scales 1)")
@click.option("--prior-scale", type=float, default=0.0, show_default=True,
              help="β: subtract β times the checkpoint's corpus log prior (posterior scores)")
@click.option("--blank-penalty", type=float, default=0.0, show_default=True,
              help="k added to the blank/silence logit before renormalising (posterior scores, Table 14)")
@click.option("--p", "p_norm", type=float, default=0.1, show_default=True, help="p of the p-norm in G (eq. 22)")
@click.option("--device", default="cpu", show_default=True, help="torch device")
def plot(checkpoint, cuts_path, cut_id, kind, output, ref_path, topology, prior_scale, blank_penalty, p_norm,
         device):
    """Draw one cut's features, score matrix and alignment (paper Figures 1, 5, 6).

    The top panel shows the features with the alignment's word boundaries (red) and, with
    --ref, the reference's (dashed cyan); the bottom panel the score matrix (log posteriors
    of blank and each transcript position, or log softmax over time of G) with the aligned
    token spans outlined.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fsalign._io import atomic_path
    from fsalign.checkpoint import load_checkpoint
    from fsalign.corpus import CutDataset, cut_text
    from fsalign.errors import FsalignError
    from fsalign.formats import read_alignments
    from fsalign.plot import plot_cut_alignment, score_cut

    try:
        loaded = load_checkpoint(checkpoint, device=device)
        cut = _find_cut(cuts_path, cut_id)
        ref_words = None
        if ref_path is not None:
            ref = read_alignments(ref_path)
            if cut_id not in ref:
                raise FsalignError(f"cut {cut_id} has no reference in {ref_path}")
            ref_words = [(s.label, s.start, s.end) for s in ref[cut_id]]
        text = cut_text(cut)
        if not text:
            raise FsalignError(f"cut {cut_id}: empty transcript, nothing to align")
        dataset = CutDataset(loaded.tokenizer)
        features = dataset.features(cut)
        scores = score_cut(loaded, features, text, kind, topology=topology, prior_scale=prior_scale,
                           blank_penalty=blank_penalty, p=p_norm, utt_id=cut_id)
    except FsalignError as e:
        raise click.ClickException(str(e)) from None
    fig = plot_cut_alignment(features, scores, token_names=loaded.tokenizer.token_names, ref_words=ref_words,
                             frame_shift_s=dataset.extractor.frame_shift, blank=loaded.model.blank, title=cut_id)
    try:
        with atomic_path(output) as tmp:
            fig.savefig(tmp, dpi=120, format=output.suffix.lstrip(".").lower() or "png")
    except ValueError as e:
        raise click.ClickException(f"{output}: cannot write this image format: {e}") from None
    finally:
        plt.close(fig)
    click.echo(f"wrote {output}: {len(scores.alignment.words)} words, {kind} scores")
