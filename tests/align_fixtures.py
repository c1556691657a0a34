"""Tiny checkpoints and cut manifests for the alignment tests (``fsalign align``, ``tse``, ``plot``).

* :func:`make_tiny_cuts`: a lhotse cut manifest of the first ``n`` utterances of a shipped
  part (``data/LibriSpeech``), audio read from the repository, reference word times from
  ``data/alignments/<part>.words.ctm`` on the supervisions (``alignment["word"]``, as
  ``prepare_librispeech`` stores them), optionally with precomputed features.
* :func:`make_tiny_checkpoint`: a tiny :class:`~fsalign.models.conformer.ConformerModel`
  with a character tokenizer, untrained or trained a few steps on those cuts, saved with
  every key :mod:`fsalign.training.loop` writes (so :func:`fsalign.checkpoint.load_checkpoint`
  reads it as it reads a recipe's ``EXP/best.pt``), corpus prior included.
* :class:`OracleModel` and :func:`oracle_features`: a character CTC "model" at 10 ms whose
  features are the logits themselves, built from the reference word times, so that an
  alignment test knows where every word must land; :func:`with_oracle_features` stores them
  on cuts.

Both take well under 5 s on one CPU core.
"""
import argparse
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from lhotse import CutSet, Features, MonoCut, Recording, SupervisionSegment
from lhotse.features.io import NumpyFilesWriter
from lhotse.supervision import AlignmentItem

from fsalign.checkpoint import rng_state, save_checkpoint
from fsalign.corpus.cuts import FRAME_SHIFT_S, default_extractor, make_dataloader
from fsalign.corpus.tokenizers import CharTokenizer
from fsalign.engine.builtin import make_topology
from fsalign.engine.fullsum import full_sum_loss
from fsalign.models.conformer import ConformerConfig, ConformerModel
from fsalign.scores.priors import CorpusPrior
from fsalign.training import add_arguments, criterion_scales, topology_params

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "LibriSpeech"
ALIGNMENTS = REPO / "data" / "alignments"

Pathlike = Union[str, Path]


def shipped_utterances(part: str = "dev-clean-2"):
    """(utterance id, transcript, flac path) of a shipped part, in file order (chapters sorted)."""
    out = []
    for trans in sorted((CORPUS / part).glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            out.append((utt, text, trans.parent / f"{utt}.flac"))
    return out


def _reference_words(part: str):
    words = {}
    for line in (ALIGNMENTS / f"{part}.words.ctm").read_text().splitlines():
        utt, _, start, duration, word = line.split()[:5]
        words.setdefault(utt, []).append(AlignmentItem(word, float(start), float(duration)))
    return words


def make_cut(utt_id: str, text: str, audio: Pathlike, words=None) -> MonoCut:
    """A whole-recording cut of ``audio`` with one supervision carrying ``text`` (and ``words``)."""
    rec = Recording.from_file(audio, recording_id=utt_id)
    sup = SupervisionSegment(
        id=utt_id, recording_id=utt_id, start=0.0, duration=rec.duration, channel=0, text=text,
        speaker=utt_id.split("-")[0], alignment={"word": words} if words else None,
    )  # fmt: skip
    return MonoCut(id=utt_id, start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def make_tiny_cuts(tmp_path: Pathlike, n: int = 4, part: str = "dev-clean-2", features: bool = False,
                   name: str = "cuts.jsonl.gz") -> Path:
    """Writes ``tmp_path/name``: cuts of the first ``n`` utterances of a shipped part.

    Args:
      tmp_path: folder for the manifest (and the features, if any).
      n: number of utterances (at most 64 for dev-clean-2).
      part: ``dev-clean-2`` or ``train-clean-5``.
      features: store 80-dim fbank features (lhotse ``LilcomChunkyWriter``) on the cuts.
      name: file name of the manifest.

    Returns:
      The manifest path. Cut ids are the LibriSpeech utterance ids; recordings point to the
      repository's FLAC files; supervisions carry the reference word times.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    refs = _reference_words(part)
    utts = shipped_utterances(part)[:n]
    if len(utts) < n:
        raise ValueError(f"{part} has only {len(utts)} utterances, asked for {n}")
    cuts = CutSet.from_cuts(make_cut(utt, text, flac, refs.get(utt)) for utt, text, flac in utts)
    if features:
        cuts = cuts.compute_and_store_features(default_extractor(), tmp_path / f"{Path(name).stem}_feats",
                                               num_jobs=1)
    path = tmp_path / name
    cuts.to_file(path)
    return path


def make_tiny_checkpoint(tmp_path: Pathlike, topology: str = "ctc", train_steps: int = 0, seed: int = 0,
                         cuts: Optional[Pathlike] = None, name: str = "tiny.pt", aed_layers: int = 0) -> Path:
    """Writes ``tmp_path/name``: a tiny Conformer checkpoint as :func:`fsalign.training.loop.train` saves it.

    Args:
      tmp_path: folder for the checkpoint.
      topology: "ctc", "hmm" or "relaxed" (stored as the training topology, default loops).
      train_steps: full-sum training steps (AdamW, lr 3e-3) on ``cuts`` before saving;
        0 keeps the random initialisation (enough for throughput and format tests).
      seed: torch seed of the initialisation.
      cuts: the cuts for training and the corpus prior (default: 4 of dev-clean-2,
        written under ``tmp_path``).
      name: file name of the checkpoint.
      aed_layers: layers of an (untrained) auxiliary AED decoder; 0: none.

    Returns:
      The checkpoint path. Tokenizer: characters A-Z and apostrophe (28 columns, blank 0);
      model: preset "tiny" (subsampling 4, no SpecAugment, no dropout), 10 ms features.
    """
    tmp_path = Path(tmp_path)
    if cuts is None:
        cuts = make_tiny_cuts(tmp_path, 4, name="tiny_checkpoint_cuts.jsonl.gz")
    tokenizer = CharTokenizer()
    parser = argparse.ArgumentParser()
    add_arguments(parser)  # the training defaults, from train.py's own parser
    args = parser.parse_args(["--topology", topology, "--dropout", "0", "--epochs", "1", "--warmup", "none",
                              "--seed", str(seed), "--device", "cpu", "--no-progress"])
    args.__dict__.update(unit="char", data_dir=None, train_part=None, dev_part=None, exp_dir=str(tmp_path))
    scales = criterion_scales(args)
    torch.manual_seed(seed)
    config = ConformerConfig.from_preset("tiny", tokenizer.num_labels, subsampling=4, dropout=0.0,
                                         spec_augment=False, aed_layers=aed_layers)
    model = ConformerModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.peak_lr, weight_decay=args.weight_decay)
    loader = make_dataloader(cuts, tokenizer, max_duration=args.max_duration, rank=0, world_size=1)
    topo = make_topology(topology, tokenizer.num_labels, **topology_params(args))
    batches = list(loader)
    step = 0
    model.train()
    while batches and step < train_steps:
        for batch in batches:
            if step >= train_steps:
                break
            h, lengths = model.forward_encoder(batch.features, batch.feature_lengths)
            log_probs = model.ctc_log_probs(model.ctc_logits(h))
            nll = full_sum_loss(log_probs, lengths, topo.compile(batch.transcripts),
                                posterior_scale=scales["posterior_scale"],
                                transition_scale=scales["transition_scale"])
            loss = nll[torch.isfinite(nll)].sum() / lengths.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            step += 1
    model.eval()
    prior = CorpusPrior(tokenizer.num_labels)
    with torch.no_grad():
        for batch in batches:
            h, lengths = model.forward_encoder(batch.features, batch.feature_lengths)
            prior.accumulate(model.ctc_log_probs(model.ctc_logits(h)), lengths)
    state = {
        "model_config": config.to_dict(), "tokenizer": tokenizer.to_dict(),
        "topology": {"kind": topology, "params": topology_params(args)},
        "criterion": scales, "frame_shift_s": FRAME_SHIFT_S, "subsampling": config.subsampling,
        "args": vars(args), "corpus_prior": prior.log_prior.cpu(),
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": {"kind": "oclr", "steps_per_epoch": max(1, len(batches))},
        "running_prior": {"log_probs_avg": torch.full((tokenizer.num_labels,), -math.log(tokenizer.num_labels)),
                          "num_updates": torch.zeros((), dtype=torch.long)},
        "epoch": 1, "step": step, "best_dev_loss": math.inf, "stage": topology, "dev": {}, "rng": rng_state(),
        "warmup_end": 0,
    }  # fmt: skip
    return save_checkpoint(state, tmp_path / name)


class OracleModel(torch.nn.Module):
    """log_softmax of the first 28 feature dimensions (a character CTC "model" at 10 ms)."""

    num_labels, subsampling, blank = 28, 1, 0

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def log_probs(self, features, lengths):
        return features[:, :, :28].log_softmax(-1), lengths


def oracle_features(cut, words, rng):
    """(T', 80) logits: at a 10 ms frame inside a reference word its letter at that relative place, else blank."""
    tokenizer = CharTokenizer()
    frames = int(round(cut.duration / 0.01))
    feats = rng.normal(0.0, 0.5, size=(frames, 80)).astype(np.float32)
    feats[:, 0] += 5.0
    for item in words:
        letters = tokenizer.encode(item.symbol)[0]
        first, last = int(item.start / 0.01), int((item.start + item.duration) / 0.01)
        for k in range(first, min(last, frames)):
            place = min(len(letters) - 1, int((k + 0.5 - first) / max(last - first, 1) * len(letters)))
            feats[k, 0] -= 4.0
            feats[k, letters[place]] += 5.0
    return feats


def with_oracle_features(cuts, folder: Pathlike, seed: int = 0) -> list:
    """``cuts`` (with reference word times) with :func:`oracle_features` stored under ``folder``, in order.

    One generator of ``seed`` draws the noise of all cuts in turn.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    out = []
    with NumpyFilesWriter(folder) as writer:
        for cut in cuts:
            feats = oracle_features(cut, cut.supervisions[0].alignment["word"], rng)
            cut.features = Features(type="oracle", num_frames=feats.shape[0], num_features=80, frame_shift=0.01,
                                    sampling_rate=16000, start=0.0, duration=cut.duration, storage_type=writer.name,
                                    storage_path=str(folder), storage_key=writer.write(cut.id, feats))
            out.append(cut)
    return out
