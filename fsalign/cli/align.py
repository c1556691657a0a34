"""``fsalign align`` and ``fsalign merge``: parse the options, call the library, report.

The work is in :mod:`fsalign.aligning.aligner` (batching, aligning), :mod:`fsalign.aligning.journal` (the journal
that makes a run resumable) and :mod:`fsalign.aligning.output` (atomic rendering of CTM / TextGrids /
cuts, ``OUT.failed.tsv``, merge); the names this module used to define are re-exported.
"""
import os
from collections import Counter
from pathlib import Path

import click

from fsalign.aligning.journal import (
    Journal,  # noqa: F401  (re-exported: defined here before)
)
from fsalign.aligning.output import (  # noqa: F401
    OUTPUT_KINDS,
    Pathlike,
    failed_path,
    journal_path,
    output_kind,
    render,
)
from fsalign.engine.mismatch import MismatchOptions
from fsalign.scores.gradscore import ALIGN_PERCENTILE
from fsalign.util import LongAudio


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    return "cpu"


def _fail(message: str):
    raise click.ClickException(" ".join(str(message).split()))


def _mismatch_options(allow: bool, garbage_penalty, skip_penalty, scores: str):
    """The MismatchOptions of --allow-mismatch (None without it); FsalignError for options that do not fit."""
    from fsalign.aligning.aligner import MISMATCH_NEEDS_POSTERIOR
    from fsalign.errors import FsalignError

    if not allow:
        given = [name for name, value in (("--garbage-penalty", garbage_penalty), ("--skip-penalty", skip_penalty))
                 if value is not None]
        if given:
            raise FsalignError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only with "
                               f"--allow-mismatch")
        return None
    if scores != "posterior":
        raise FsalignError(MISMATCH_NEEDS_POSTERIOR)
    defaults = MismatchOptions()
    return MismatchOptions(defaults.garbage_penalty if garbage_penalty is None else garbage_penalty,
                           defaults.skip_penalty if skip_penalty is None else skip_penalty)


@click.command(context_settings={"show_default": True})
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Training checkpoint (EXP/best.pt): model, tokenizer, topology, frame shift, corpus prior.")
@click.option("--cuts", "cuts_path", required=True, type=click.Path(path_type=Path),
              help="Lhotse cut manifest (.jsonl.gz) with transcripts; features are computed on the fly "
                   "where the cuts have none.")
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="OUT.ctm (CTM), OUT.jsonl.gz (cuts with alignment['word'/'token']) or a folder "
                   "(one Praat TextGrid per cut, tiers words and tokens).")
@click.option("--scores", type=click.Choice(["posterior", "grad", "gradext"]), default="posterior",
              help="posterior: Viterbi on the model's output; grad/gradext: GradScore/GradScoreExt on the "
                   "input gradients (10 ms resolution).")
@click.option("--level", type=click.Choice(["word", "token"]), default="word", help="Spans written to a CTM.")
@click.option("--boundaries", type=click.Choice(["viterbi", "expected"]), default=None,
              help="viterbi: word and token times at the frame edges of the best path; expected: the posterior-mean "
                   "boundary over all paths, finer than a frame (built-in topologies, not with --allow-mismatch); "
                   "see docs/align.md.  [default: expected; viterbi with --allow-mismatch]")
@click.option("--topology", type=click.Choice(["ctc", "hmm", "relaxed"]), default=None,
              help="Topology for posterior alignment.  [default: the one the model was trained with]")
@click.option("--prior-scale", type=float, default=None,
              help="β: subtract β·log prior (the checkpoint's corpus prior) from the posteriors.  [default: 1.5 "
                   "with the HMM topology, 1 with the others, when the checkpoint has a corpus prior (the recipe "
                   "stores one); 0 without one or with --allow-mismatch]")
@click.option("--blank-penalty", type=float, default=0.0,
              help="k: added to the blank/silence log-probability before renormalising (negative: less blank).")
@click.option("--posterior-scale", type=float, default=None,
              help="α.  [default: the training value with the training topology, else 1]")
@click.option("--transition-scale", type=float, default=None,
              help="γ.  [default: the training value with the training topology, else 1]")
@click.option("--grad-p", type=float, default=0.1, help="p of the gradient p-norm (grad/gradext).")
@click.option("--grad-chunk-size", type=int, default=32,
              help="Transcript positions per batched gradient (grad/gradext); lower needs less memory.")
@click.option("--grad-blank-score", type=float, default=-6.0, help="Blank score γ_ε of GradScore.")
@click.option("--grad-percentile", type=float, default=ALIGN_PERCENTILE, show_default=True,
              help="γ_percentile of GradScoreExt (the paper's usual value is 60).")
@click.option("--grad-prefix", type=click.Choice(["forward", "onset"]), default="forward", show_default=True,
              help="CTC prefix score in G: forward (eq. 23 read literally: forward variables summed over t) "
                   "or onset (Hori et al.: a_s first emitted at t); see docs/gradscore.md.")
@click.option("--grad-source", type=click.Choice(["ctc", "aed", "hybrid"]), default=None,
              help="Label scores G differentiates (grad/gradext): ctc (prefix scores), aed (the decoder) or hybrid "
                   "(eq. 50: (1-λ)·CTC + λ·AED).  [default: aed when the checkpoint has an AED decoder "
                   "(trained with --aed-layers), else ctc]")
@click.option("--aed-weight", type=float, default=None,
              help="λ of --grad-source hybrid, in [0, 1] (given alone, it implies hybrid).  [default: 0.5]")
@click.option("--allow-mismatch", is_flag=True,
              help="Transcripts may not match the audio exactly: untranscribed speech goes to a garbage state at "
                   "word boundaries, transcript words that were not spoken are skipped (marked in every output; "
                   "posterior scores only).  [default: off]")
@click.option("--garbage-penalty", type=float, default=None,
              help="With --allow-mismatch: path-score cost of every garbage frame.  [default: "
                   f"{MismatchOptions().garbage_penalty:g}]")
@click.option("--skip-penalty", type=float, default=None,
              help="With --allow-mismatch: path-score cost of every skipped transcript word.  [default: "
                   f"{MismatchOptions().skip_penalty:g}]")
@click.option("--long-threshold", type=float, default=LongAudio().threshold_s,
              help="Seconds above which a recording is long: aligned in a batch of its own, its encoder run in "
                   f"overlapping windows ({LongAudio().window_s:g} s kept, {LongAudio().context_s:g} s of context "
                   "each side), its Viterbi in bounded memory (posterior scores; see docs/long_audio.md).")
@click.option("--batch-duration", type=float, default=None,
              help="Seconds of audio per batch; 0: one cut per batch.  [default: 100; 0 for grad/gradext on "
                   "CPU, where batching the gradients only adds padding work]")
@click.option("--window", type=int, default=1000,
              help="Consecutive cuts sorted by duration and batched together; a shard is a whole number "
                   "of windows.")
@click.option("--num-workers", type=int, default=0,
              help="DataLoader worker processes loading audio and features (0: in the main process).")
@click.option("--shard", default="0/1",
              help="i/n: align only the i-th of n contiguous parts of the cuts (join them with fsalign merge); "
                   "'env': i/n = $RANK/$WORLD_SIZE (torchrun). '{shard}' in --output becomes i.")
@click.option("--device", default=None,
              help="torch device.  [default: cuda (cuda:$LOCAL_RANK) if available, else cpu]")
@click.option("--restart", is_flag=True,
              help="Discard the journal of an earlier unfinished run instead of resuming.  [default: off, resume]")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (utterances/s, real-time factor).")
def align(checkpoint, cuts_path, output, scores, level, boundaries, topology, prior_scale, blank_penalty,
          posterior_scale, transition_scale, grad_p, grad_chunk_size, grad_blank_score, grad_percentile, grad_prefix,
          grad_source, aed_weight, allow_mismatch, garbage_penalty, skip_penalty, long_threshold, batch_duration,
          window, num_workers, shard, device, restart, progress):
    """Align the cuts of a corpus with a trained model and write word (and token) times.

    Utterances that cannot be aligned (unreadable audio, units the model does not know,
    too short for the transcript, NaN scores, a long recording with gradient scores or
    --allow-mismatch) are skipped and listed with the reason in OUT.failed.tsv. Long
    recordings (an hour with one transcript) need no option: past --long-threshold seconds
    a cut is encoded in windows and aligned in bounded memory. With --allow-mismatch,
    transcript words that were not spoken are skipped and marked (CTM ';; skipped' lines,
    TextGrid tier 'skipped', cuts custom['skipped_words']), untranscribed speech is marked
    too. Every word and token gets a confidence in [0, 1], the mean frame posterior of its
    aligned tokens (CTM 6th column, TextGrid tier 'confidence', cuts AlignmentItem.score);
    the summary line gives the mean and the number of words below 0.5, which are worth a
    look. Results go to
    OUT.journal.jsonl as they come: re-running the same command after an interruption
    continues where it stopped. Exit status 0 if any
    utterance was aligned, 1 (with the reason) if none was or an input is unusable.
    """
    import torch

    from fsalign.aligning.aligner import Aligner
    from fsalign.aligning.batches import parse_shard
    from fsalign.aligning.journal import journal_header
    from fsalign.aligning.output import check_cut_ids
    from fsalign.aligning.run import align_to_output, read_cut_ids
    from fsalign.checkpoint import load_checkpoint
    from fsalign.errors import FsalignError
    from fsalign.results.confidence import LOW_CONFIDENCE
    from fsalign.util import check_output_path

    try:
        if shard == "env":
            if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
                raise FsalignError("--shard env needs $RANK and $WORLD_SIZE (as torchrun sets them)")
            shard = f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
        i, n = parse_shard(shard)
        output = Path(str(output).replace("{shard}", str(i)))
        kind = output_kind(output)
        check_output_path(output, "--output")
        if num_workers < 0 or window < 1 or (batch_duration is not None and not batch_duration >= 0):
            raise FsalignError("--num-workers must be >= 0, --window >= 1 and --batch-duration >= 0")
        mismatch = _mismatch_options(allow_mismatch, garbage_penalty, skip_penalty, scores)
        long_audio = LongAudio(threshold_s=long_threshold)
    except FsalignError as e:
        _fail(e)
    if not checkpoint.is_file():
        _fail(f"checkpoint {checkpoint} does not exist")
    device = device or _default_device()
    try:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise FsalignError(f"--device {device}: CUDA is not available here")
    except RuntimeError as e:
        _fail(f"--device {device}: {e}")
    except FsalignError as e:
        _fail(e)
    try:
        loaded = load_checkpoint(checkpoint, device)
        aligner = Aligner.from_checkpoint(
            loaded, scores, boundaries, topology=topology, prior_scale=prior_scale, blank_penalty=blank_penalty,
            posterior_scale=posterior_scale, transition_scale=transition_scale, grad_p=grad_p,
            grad_chunk_size=grad_chunk_size, grad_blank_score=grad_blank_score, grad_percentile=grad_percentile,
            grad_prefix=grad_prefix, grad_source=grad_source, aed_weight=aed_weight, mismatch=mismatch,
            long_audio=long_audio)
    except FsalignError as e:
        _fail(e)
    except Exception as e:
        _fail(f"cannot load checkpoint {checkpoint}: {type(e).__name__}: {e}")
    dev = loaded.metadata.get("dev") or {}
    if dev.get("ler") is not None and dev["ler"] > 0.8:
        click.echo(f"warning: {checkpoint} looks untrained (dev label error rate {dev['ler']:.2f} after "
                   f"{loaded.metadata.get('epoch')} epochs): do not trust its times", err=True)
    if batch_duration is None:
        batch_duration = 0.0 if scores != "posterior" and aligner.device.type == "cpu" else 100.0
    try:
        cuts, all_ids = read_cut_ids(cuts_path)
        check_cut_ids(kind, all_ids)
        header = journal_header(checkpoint, cuts_path, (i, n), window, batch_duration, aligner.settings())
        journal = Journal(journal_path(output), header, restart)
    except FsalignError as e:
        _fail(e)
    summary = align_to_output(aligner, cuts, all_ids, journal, output, kind, level, batch_duration, window, (i, n),
                              num_workers, progress)
    reasons = Counter(reason.split(":")[0] for _, reason in summary.failed)
    what = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    failures = f"; {len(summary.failed)} failed ({what}), listed in {summary.failed_path}" if summary.failed else ""
    shard_note = f" (shard {i}/{n})" if n > 1 else ""
    confidence = ""
    if summary.mean_confidence is not None:
        confidence = (f"; mean word confidence {summary.mean_confidence:.3f}, {summary.low_confidence} words below "
                      f"{LOW_CONFIDENCE:g}")
    line = (f"aligned {summary.aligned} of {len(summary.utterances)} utterances{shard_note}, "
            f"{summary.aligned_s:.1f} s of audio{confidence}{failures}")
    if summary.utterances and not summary.aligned:
        _fail(f"no utterance aligned: {line}; first: {summary.failed[0][0]}: {summary.failed[0][1]}"
              if summary.failed else f"no utterance aligned: {line}")
    if not summary.utterances:
        line = f"shard {i}/{n} of {cuts_path} holds no cuts (more shards than windows); wrote an empty output"
    click.echo(f"{line} -> {output}", err=True)


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="The merged output, of the inputs' format (.ctm, .jsonl.gz or a TextGrid folder).")
def merge(inputs, output):
    """Join the outputs of `fsalign align --shard i/n` runs, given in shard order (0/n first).

    CTM and cut files are concatenated in the given order, TextGrid folders combined; their
    OUT.failed.tsv lists are joined into OUTPUT.failed.tsv. The result equals the output of
    one unsharded run with the same options, byte for byte. An utterance found in two inputs
    is an error.
    """
    from fsalign.aligning.output import merge_outputs
    from fsalign.errors import FsalignError

    try:
        count = merge_outputs(list(inputs), output)
    except (FsalignError, OSError) as e:
        _fail(e)
    click.echo(f"merged {count} utterances from {len(inputs)} inputs -> {output}", err=True)
