"""``fsalign tse`` and ``fsalign plot``: judging and looking at alignments.

``fsalign tse --ref REF --hyp HYP [--ref-tokens R] [--hyp-tokens H] [--json OUT]`` compares the
word (and token) times of two alignments (each a CTM file, a folder of TextGrids, LibriSpeech
``.alignment.txt`` files or lhotse cuts with alignments; :mod:`fsalign.results.formats`) with
:func:`compare_alignments`: the time stamp error of appendix A.4.2 (boundary and centre), onset
and offset errors and biases, the share of boundaries within 10-50 ms, the token boundary error,
the silence ratio and mean word/token durations of both sides, and which utterances could not
be compared.

``fsalign plot`` draws the features, score matrix and alignment of one cut
(:func:`fsalign.aligning.plot.plot_cut_alignment`).
"""
import json
import logging
from pathlib import Path
from typing import Optional

import click

from fsalign.results.compare import AlignmentComparison, compare_alignments, error_lines, with_tokens

__all__ = ["tse", "plot"]

logger = logging.getLogger(__name__)


def _fmt(value: Optional[float], unit: str = " ms", scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"


def _summary(c: AlignmentComparison) -> str:
    return "\n".join([
        f"utterances compared: {c.num_utterances}, skipped (words differ): {len(c.skipped)}, "
        f"only in REF: {len(c.only_in_ref)}, only in HYP: {len(c.only_in_hyp)}",
        f"words compared: {c.num_words} (skipped: {c.skipped_words} words of REF)",
        *error_lines(c.errors()),
        f"silence ratio (in no word): REF {_fmt(c.ref.silence_ratio, ' %', 100)}, "
        f"HYP {_fmt(c.hyp.silence_ratio, ' %', 100)}",
        f"blank ratio (in no token): REF {_fmt(c.ref.blank_ratio, ' %', 100)}, "
        f"HYP {_fmt(c.hyp.blank_ratio, ' %', 100)}",
        f"word duration: REF {_fmt(c.ref.word_duration_ms)}, HYP {_fmt(c.hyp.word_duration_ms)}",
        f"token duration: REF {_fmt(c.ref.token_duration_ms)}, HYP {_fmt(c.hyp.token_duration_ms)}",
    ])


_MAX_LISTED = 10
_ALIGNMENT_PATH = click.Path(exists=True, path_type=Path)


@click.command("tse", short_help="Word and token boundary errors, silence ratio and durations of HYP vs REF.")
@click.option("--ref", "ref_path", type=_ALIGNMENT_PATH, required=True,
              help="reference alignment: a .ctm file, a folder of <utt>.TextGrid files, LibriSpeech "
                   ".alignment.txt files (a file or a folder searched recursively) or lhotse cuts "
                   "(.jsonl.gz) with alignment['word'] (required; no default)")
@click.option("--hyp", "hyp_path", type=_ALIGNMENT_PATH, required=True,
              help="hypothesis alignment, in any of the formats of --ref (required; no default)")
@click.option("--ref-tokens", "ref_tokens_path", type=_ALIGNMENT_PATH, default=None,
              help="token (phone) times of the reference from another file, e.g. a phones CTM; they replace "
                   "the tokens REF carries (default: REF's own, if any)")
@click.option("--hyp-tokens", "hyp_tokens_path", type=_ALIGNMENT_PATH, default=None,
              help="token times of the hypothesis from another file, e.g. the CTM of fsalign align --level "
                   "token (default: HYP's own, if any)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write every number (and the skipped/missing utterance ids) to this JSON file "
                   "(default: none, print only)")
def tse(ref_path: Path, hyp_path: Path, ref_tokens_path: Optional[Path], hyp_tokens_path: Optional[Path],
        json_path: Optional[Path]):
    """Word (and token) boundary errors of HYP's times w.r.t. REF's (appendix A.4.2), in ms.

    Prints the TSE on word boundaries ((|Δstart| + |Δend|) / 2 per word) and on word
    centres, the mean absolute and mean signed (Δ = HYP − REF, > 0: late) onset (word start)
    and offset (word end) errors, the share of word boundaries (starts and ends) within 10,
    20, 25 and 50 ms, and, where both sides have token (phone) times, the token boundary
    error: (|Δstart| + |Δend|) / 2 per token, over the tokens of compared words whose token
    sequences are equal (a token belongs to the word holding its midpoint). Then the silence
    ratio (share of the utterance covered by no word), the blank ratio (covered by no token:
    the paper's Sil. ratio) and the mean word and token durations of both sides, the number
    of words compared, and the utterances that could not be compared (word sequences differ,
    or present on one side only; --json lists them with the reason). Utterances are matched
    by id, words and tokens case-insensitively; silence labels ("", <eps>, sil, sp) are
    ignored. A CTM carries no utterance length: for two CTMs the later last word end stands
    in for it. Exits 1 when no utterance could be compared.
    """
    import fsalign.corpus.recordings  # noqa: F401  (registers the downmix transform of align-corpus' cuts)
    from fsalign.errors import FsalignError
    from fsalign.results.formats import read_alignments, read_utterances
    from fsalign.util import atomic_open, check_output_path

    try:
        ref = read_utterances(ref_path)
        hyp = read_utterances(hyp_path)
        if ref_tokens_path is not None:
            ref = with_tokens(ref, read_alignments(ref_tokens_path, level="token"))
        if hyp_tokens_path is not None:
            hyp = with_tokens(hyp, read_alignments(hyp_tokens_path, level="token"))
    except FsalignError as e:
        raise click.ClickException(str(e)) from None
    result = compare_alignments(ref, hyp)
    for utt_id, reason in list(result.skipped.items())[:_MAX_LISTED]:
        logger.warning("utterance %s not compared: %s", utt_id, reason)
    if len(result.skipped) > _MAX_LISTED:
        logger.warning("... and %d more utterances not compared (see --json)", len(result.skipped) - _MAX_LISTED)
    click.echo(_summary(result))
    if json_path is not None:
        try:
            with atomic_open(check_output_path(json_path, "--json"), "w", encoding="utf-8") as f:
                f.write(json.dumps(result.to_dict(), indent=2) + "\n")
        except (FsalignError, OSError) as e:
            raise click.ClickException(str(e) if isinstance(e, FsalignError) else f"{json_path}: {e.strerror or e}")
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
@click.option("--prior-scale", type=float, default=None,
              help="β: subtract β times the checkpoint's corpus log prior (posterior scores) (default: 1 when the "
                   "checkpoint has a corpus prior, else 0, as fsalign align)")
@click.option("--blank-penalty", type=float, default=0.0, show_default=True,
              help="k added to the blank/silence logit before renormalising (posterior scores, Table 14)")
@click.option("--p", "p_norm", type=float, default=0.1, show_default=True, help="p of the p-norm in G (eq. 22)")
@click.option("--grad-source", type=click.Choice(["ctc", "aed", "hybrid"]), default=None,
              help="label scores G differentiates (grad/gradext): ctc, aed or hybrid (eq. 50: (1-λ)·CTC + λ·AED) "
                   "(default: aed when the checkpoint has an AED decoder, else ctc)")
@click.option("--aed-weight", type=float, default=None,
              help="λ of --grad-source hybrid, in [0, 1]; given alone, it implies hybrid (default: 0.5)")
@click.option("--device", default="cpu", show_default=True, help="torch device")
def plot(checkpoint, cuts_path, cut_id, kind, output, ref_path, topology, prior_scale, blank_penalty, p_norm,
         grad_source, aed_weight, device):
    """Draw one cut's features, score matrix and alignment (paper Figures 1, 5, 6).

    The top panel shows the features with the alignment's word boundaries (red) and, with
    --ref, the reference's (dashed cyan); the bottom panel the score matrix (log posteriors
    of blank and each transcript position, or log softmax over time of G) with the aligned
    token spans outlined.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fsalign.aligning.aligner import make_scorer
    from fsalign.aligning.plot import plot_cut_alignment, score_cut
    from fsalign.checkpoint import load_checkpoint
    from fsalign.corpus.cuts import CutDataset, cut_text
    from fsalign.errors import FsalignError
    from fsalign.results.formats import read_alignments
    from fsalign.util import atomic_path, check_output_path

    try:
        check_output_path(output, "--output")
        loaded = load_checkpoint(checkpoint, device=device)
        scorer = make_scorer(loaded, kind, topology, prior_scale, blank_penalty, grad_p=p_norm,  # checks options
                             grad_source=grad_source, aed_weight=aed_weight)
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
        scores = score_cut(loaded, features, text, utt_id=cut_id, scorer=scorer)
    except FsalignError as e:
        raise click.ClickException(str(e)) from None
    fig = plot_cut_alignment(features, scores, token_names=loaded.tokenizer.token_names, ref_words=ref_words,
                             frame_shift_s=dataset.extractor.frame_shift, title=cut_id)
    try:
        with atomic_path(output) as tmp:
            fig.savefig(tmp, dpi=120, format=output.suffix.lstrip(".").lower() or "png")
    except ValueError as e:
        raise click.ClickException(f"{output}: cannot write this image format: {e}") from None
    except OSError as e:
        raise click.ClickException(f"{output}: cannot write the image: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    click.echo(f"wrote {output}: {len(scores.alignment.words)} words, {kind} scores")
