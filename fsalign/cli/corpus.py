"""``fsalign align-corpus CORPUS OUTPUT``: word and phone times for a folder of recordings and transcripts."""
import logging
from pathlib import Path

import click

__all__ = ["align_corpus"]


@click.command("align-corpus", context_settings={"show_default": True})
@click.argument("corpus", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="A trained model (EXP/best.pt) to align with; nothing is trained.  [default: train one on the "
                   "corpus, kept at OUTPUT/model/best.pt]")
@click.option("--unit", type=click.Choice(["phone", "char", "spm", "bpe"]), default="phone",
              help="Units of the model trained here: phone (HMM topology, CMU phones) or char/spm/bpe (CTC).")
@click.option("--epochs", type=int, default=None,
              help="Training epochs.  [default: adapted to the corpus: 20 for 20 minutes of audio or more, more "
                   "for less, at most 100]")
@click.option("--layout", type=click.Choice(["mfa", "kaldi", "librispeech", "lhotse"]), default=None,
              help="Corpus layout.  [default: detected]")
@click.option("--oov", type=click.Choice(["g2p", "skip", "error"]), default="g2p",
              help="Words no lexicon knows (phone units): pronounce them with the G2P model (listed in "
                   "OUTPUT/oovs_found.txt), skip their utterances, or stop.")
@click.option("--vocab-size", type=int, default=500, help="SentencePiece units (spm/bpe), clamped to what the text "
                                                          "supports.")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="Reference word times (CTM, TextGrid folder, LibriSpeech alignments, cuts) to measure against; "
                   "the TSE goes to the report.")
@click.option("--scores", type=click.Choice(["posterior", "grad", "gradext"]), default="posterior",
              help="posterior: Viterbi on the model's output; grad/gradext: GradScore/GradScoreExt on the input "
                   "gradients (10 ms resolution, see fsalign align).")
@click.option("--grad-source", type=click.Choice(["ctc", "aed", "hybrid"]), default=None,
              help="Label scores G differentiates (grad/gradext): ctc, aed or hybrid (eq. 50: (1-λ)·CTC + λ·AED); "
                   "aed and hybrid need a --checkpoint with an AED decoder.  [default: aed when the checkpoint has "
                   "one, else ctc]")
@click.option("--aed-weight", type=float, default=None,
              help="λ of --grad-source hybrid, in [0, 1] (given alone, it implies hybrid).  [default: 0.5]")
@click.option("--num-jobs", type=int, default=1, help="Processes computing features.")
@click.option("--device", default=None, help="Torch device.  [default: cuda if available, else cpu]")
@click.option("--seed", type=int, default=42, help="Training seed.")
@click.option("--allow-mismatch", is_flag=True,
              help="Transcripts may not match the audio exactly: untranscribed speech is given to a garbage state, "
                   "transcript words that were not spoken are skipped; outputs and report mark both.  "
                   "[default: off]")
@click.option("--boundaries", type=click.Choice(["viterbi", "expected"]), default=None,
              help="viterbi: times at the frame edges of the best path; expected: the posterior-mean boundary over "
                   "all paths, finer than a frame (not with --allow-mismatch; see fsalign align).  [default: expected; "
                   "viterbi with --allow-mismatch]")
@click.option("--long-threshold", type=float, default=60.0,
              help="Seconds above which a recording is long: not trained on, aligned alone with the windowed encoder "
                   "and the bounded-memory Viterbi (posterior scores; see docs/long_audio.md).")
@click.option("--progress/--no-progress", default=True, help="Progress bars.")
def align_corpus(corpus, output, checkpoint, unit, epochs, layout, oov, vocab_size, reference, scores, grad_source,
                 aed_weight, num_jobs, device, seed, allow_mismatch, boundaries, long_threshold, progress):
    """Align a corpus as it is kept: audio files with transcripts, Kaldi, LibriSpeech or Lhotse.

    CORPUS is a folder of audio files with a transcript of the same name beside each (MFA
    layout: .lab, .txt or .TextGrid), a Kaldi data directory, a LibriSpeech tree or a Lhotse
    manifest. Without --checkpoint it trains a model on the corpus first (like `mfa train`), with --checkpoint
    it only aligns (like `mfa align`). OUTPUT gets one TextGrid per audio file mirroring the corpus
    (tiers words, as written, and phones or tokens), alignments.ctm (the spoken words),
    alignments.jsonl.gz (Lhotse cuts with alignments), report.txt and report.json. An interrupted
    run continues where it stopped when run again; a finished one is not redone. With
    --allow-mismatch the transcript words that were not spoken are skipped (listed per file in
    the report) and untranscribed speech is given to garbage. Recordings longer than
    --long-threshold (an hour-long interview with one transcript) are aligned too, in bounded
    memory; a model trained here learns from the shorter ones only.
    """
    from fsalign.aligning.workflow import CorpusJob, summary_lines
    from fsalign.aligning.workflow import align_corpus as run
    from fsalign.errors import FsalignError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = CorpusJob(corpus, output, checkpoint, unit, layout, epochs, num_jobs, device, oov, vocab_size, reference,
                    progress, seed, scores=scores, grad_source=grad_source, aed_weight=aed_weight,
                    allow_mismatch=allow_mismatch, boundaries=boundaries, long_threshold=long_threshold)
    try:
        report = run(job)
    except FsalignError as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    if report.get("nothing_to_do"):
        click.echo(f"{output} is complete (report.json): nothing to do; delete it to align again", err=True)
        return
    for line in summary_lines(report):
        click.echo(line, err=True)
    if not report["aligned"]:
        raise click.ClickException("no utterance was aligned (see report.txt)")
