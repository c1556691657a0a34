"""Training loop, checkpoints, resume, Conformer model: fast runs on a few shipped utterances."""
import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fsalign.training as training
import fsalign.training.loop as training_loop
from fsalign.checkpoint import load_checkpoint
from fsalign.corpus.cuts import make_dataloader
from fsalign.corpus.prepare import main as prepare_main
from fsalign.corpus.tokenizers import Tokenizer
from fsalign.engine.viterbi import viterbi_align
from fsalign.errors import FsalignError
from fsalign.models.conformer import ConformerConfig, ConformerModel, ConvSubsampling, count_frames
from fsalign.scores.gradient import AedModel, CtcModel

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "LibriSpeech"
ALIGNMENTS = REPO / "data" / "alignments" / "LibriSpeech"
PICK = {"train-clean-5": 4, "dev-clean-2": 2}  # utterances per part, taken from the first chapter


def _copy_subset(root: Path) -> None:
    for part, count in PICK.items():
        trans = sorted((SHIPPED / part).glob("*/*/*.trans.txt"))[0]
        chapter = trans.parent.relative_to(SHIPPED / part)
        lines = trans.read_text().splitlines()[:count]
        ids = {line.split()[0] for line in lines}
        dst = root / "LibriSpeech" / part / chapter
        dst.mkdir(parents=True)
        (dst / trans.name).write_text("\n".join(lines) + "\n")
        for utt in ids:
            shutil.copy(trans.parent / f"{utt}.flac", dst / f"{utt}.flac")
        ali_src = next((ALIGNMENTS / part / chapter).glob("*.alignment.txt"))
        ali_dst = root / "alignments" / "LibriSpeech" / part / chapter
        ali_dst.mkdir(parents=True)
        kept = [ln for ln in ali_src.read_text().splitlines() if ln.split()[0] in ids]
        (ali_dst / ali_src.name).write_text("\n".join(kept) + "\n")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    _copy_subset(root)
    prepare_main([
        "--corpus-dir", str(root / "LibriSpeech"), "--alignments-dir", str(root / "alignments" / "LibriSpeech"),
        "--parts", *PICK, "--output-dir", str(root / "data"), "--unit", "char", "phone",
    ])  # fmt: skip
    return root / "data"


def _args(data_dir: Path, exp: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unit", default="char")
    parser.add_argument("--data-dir")
    parser.add_argument("--train-part", default="train-clean-5")
    parser.add_argument("--dev-part", default="dev-clean-2")
    parser.add_argument("--exp-dir")
    training.add_arguments(parser)
    return parser.parse_args([
        "--data-dir", str(data_dir), "--exp-dir", str(exp), "--preset", "tiny", "--no-progress",
        "--max-duration", "15", *extra,
    ])  # fmt: skip


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("factor", [2, 4, 6])
def test_conformer_lengths_are_ceil_of_subsampled_input(factor):
    model = ConformerModel(ConformerConfig.from_preset("tiny", 10, subsampling=factor)).eval()
    lengths = torch.tensor([97, 60, 13, 6])
    out = model(torch.randn(4, 97, 80), lengths)
    expected = [math.ceil(n / factor) for n in lengths.tolist()]
    assert out["lengths"].tolist() == expected
    assert out["logits"].shape == (4, max(expected), 10)
    assert count_frames(lengths, factor).tolist() == expected  # what alignment counts without the model


def _fbank_frame_of_click(sample: int, sampling_rate: int = 16000) -> int:
    """The lhotse fbank frame where a click at ``sample`` (in silence) is loudest."""
    from fsalign.corpus.cuts import default_extractor

    audio = np.zeros(sampling_rate, dtype=np.float32)
    audio[sample] = 1.0
    feats = default_extractor().extract(audio, sampling_rate)  # (T', F) log-mel
    return int(np.argmax(feats.sum(axis=1)))


@pytest.mark.parametrize("factor", [2, 4, 6])
def test_frame_time_offset_centres_encoder_frames_on_their_audio(factor):
    from fsalign.results.alignment import frame_time_offset

    shift = 0.01
    # 1) lhotse fbank frame k is centred at (k + 1/2) * shift: a click is loudest there
    for sample in (4000, 4077, 8159, 12345):
        k = _fbank_frame_of_click(sample)
        assert abs((k + 0.5) * shift - sample / 16000) <= shift / 2 + 1e-9, (sample, k)
    # 2) the conv frontend centres encoder frame u on feature frame factor * u: the input
    # frames output u depends on (all weights positive, so no ReLU hides one) are symmetric
    frontend = ConvSubsampling(80, 16, factor=factor, channels=4, dropout=0.0)
    with torch.no_grad():
        for p in frontend.parameters():
            p.copy_(p.abs() + 0.01)
    x = torch.rand(1, 97, 80, requires_grad=True)
    out, _ = frontend(x, torch.tensor([97]))
    for u in (3, 7, 10):
        (grad,) = torch.autograd.grad(out[0, u].sum(), x, retain_graph=True)
        support = torch.nonzero(grad[0].abs().sum(dim=1)).flatten()
        assert (support[0] + support[-1]).item() == 2 * factor * u
    # 3) so the span [u, u + 1) * factor * shift + offset is centred on (factor * u + 1/2) * shift
    offset = frame_time_offset(shift, factor)
    for u in (0, 5, 12):
        centre = offset + (u + 0.5) * factor * shift
        assert centre == pytest.approx((factor * u + 0.5) * shift)
    assert frame_time_offset(shift, 1) == 0.0


def test_utterance_cmvn_normalises_valid_frames_only():
    from fsalign.models.conformer import utterance_cmvn

    torch.manual_seed(0)
    lengths = torch.tensor([7, 4])
    x = torch.randn(2, 7, 3) * 5 + 2
    x[1, 4:] = 1e6  # padding garbage must neither count nor survive
    y = utterance_cmvn(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        ref = x[b, :n].double()
        ref = (ref - ref.mean(0)) / ref.var(0, unbiased=False).add(1e-5).sqrt()  # numpy-style population stats
        torch.testing.assert_close(y[b, :n].double(), ref, atol=1e-5, rtol=1e-5)
        assert torch.all(y[b, n:] == 0)


def test_old_checkpoint_configs_load_without_input_norm():
    config = ConformerConfig.from_preset("tiny", 5).to_dict()
    assert config["input_norm"] == "utterance"
    del config["input_norm"]
    assert ConformerConfig.from_dict(config).input_norm == "none"
    with pytest.raises(ValueError, match="input_norm"):
        ConformerModel(ConformerConfig.from_preset("tiny", 5, input_norm="global"))


def test_conformer_batched_equals_per_utterance_in_eval_mode():
    torch.manual_seed(0)
    model = ConformerModel(ConformerConfig.from_preset("tiny", 12, aed_layers=1, blank_sep=True)).eval()
    lengths = torch.tensor([90, 41, 17])
    feats = torch.randn(3, 90, 80) * (torch.arange(90)[None, :, None] < lengths[:, None, None])
    targets, target_lengths = torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0]]), torch.tensor([3, 2, 1])
    h, hl = model.forward_encoder(feats, lengths)
    log_probs = model.ctc_log_probs(model.ctc_logits(h))
    aed = model.aed_log_probs(h, hl, targets, target_lengths)
    for b in range(3):
        n, s = int(lengths[b]), int(target_lengths[b])
        hb, hlb = model.forward_encoder(feats[b : b + 1, :n], lengths[b : b + 1])
        lp_b = model.ctc_log_probs(model.ctc_logits(hb))[0]
        torch.testing.assert_close(log_probs[b, : int(hl[b])], lp_b, atol=1e-4, rtol=1e-4)
        aed_b = model.aed_log_probs(hb, hlb, targets[b : b + 1, :s], target_lengths[b : b + 1])[0]
        torch.testing.assert_close(aed[b, : s + 1], aed_b, atol=1e-4, rtol=1e-4)


def test_conformer_satisfies_gradscore_protocols_and_config_round_trips():
    config = ConformerConfig.from_preset("tiny", 9, aed_layers=1)
    model = ConformerModel(config)
    assert isinstance(model, CtcModel) and isinstance(model, AedModel)
    assert ConformerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        ConformerConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_spec_augment_only_in_training_mode():
    model = ConformerModel(ConformerConfig.from_preset("tiny", 5))
    x = torch.randn(2, 200, 80)
    model.train()
    assert (model.spec_augment(x) == 0).any()
    model.eval()
    assert torch.equal(model.spec_augment(x), x)


def test_one_cycle_lr_matches_paper_shape():
    peak, final = 6e-4, 1e-6
    points = {0.0: peak / 10, 0.225: (peak / 10 + peak) / 2, 0.45: peak, 0.9: peak / 10, 1.0: final}
    for progress, expected in points.items():
        assert training.one_cycle_lr(progress, peak, final) == pytest.approx(expected, rel=1e-9)
    values = [training.one_cycle_lr(p / 100, peak, final) for p in range(101)]
    assert max(values) == pytest.approx(peak) and values.index(max(values)) == 45


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def ctc_run(data_dir, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp_ctc")
    metrics = training.train(_args(data_dir, exp, "--epochs", "1", "--topology", "ctc"))
    return exp, metrics


def test_one_epoch_smoke_run_writes_checkpoints_and_eval(ctc_run):
    exp, metrics = ctc_run
    assert (exp / "last.pt").is_file() and (exp / "best.pt").is_file()
    saved = json.loads((exp / "eval.json").read_text())
    assert saved["loss"] == pytest.approx(metrics["loss"]) and math.isfinite(saved["loss"])
    assert saved["utterances"] == PICK["dev-clean-2"] and saved["aligned_words"] > 0
    assert 0 <= saved["silence_ratio"] <= 1 and saved["tse_boundary_ms"] >= 0
    assert list((exp / "tensorboard").iterdir())


def test_eval_json_word_errors_are_those_of_fsalign_tse_on_fsalign_align(ctc_run, data_dir, tmp_path):
    from click.testing import CliRunner

    from fsalign.cli.main import main

    exp, _ = ctc_run
    saved = json.loads((exp / "eval.json").read_text())
    cuts, out = data_dir / "cuts_dev-clean-2.jsonl.gz", tmp_path / "dev.jsonl.gz"
    aligned = CliRunner().invoke(main, ["align", "--checkpoint", str(exp / "best.pt"), "--cuts", str(cuts),
                                        "--output", str(out), "--no-progress", "--boundaries", "viterbi",
                                        "--prior-scale", "0"])  # what the training measures: the best path
    assert aligned.exit_code == 0, aligned.output
    measured = CliRunner().invoke(main, ["tse", "--ref", str(cuts), "--hyp", str(out), "--json",
                                         str(tmp_path / "tse.json")])
    assert measured.exit_code == 0, measured.output
    tse = json.loads((tmp_path / "tse.json").read_text())
    assert saved["aligned_words"] == saved["num_words"] == tse["num_words"] > 0
    for key in ("tse_boundary_ms", "tse_centre_ms", "onset_ms", "offset_ms", "onset_bias_ms", "offset_bias_ms"):
        assert saved[key] == pytest.approx(tse[key], abs=1e-6), key
    assert saved["within_ms"] == pytest.approx(tse["within_ms"])
    assert (saved["onset_ms"] + saved["offset_ms"]) / 2 == pytest.approx(saved["tse_boundary_ms"])


def test_eval_loss_equals_torch_ctc_loss_of_loaded_model(ctc_run, data_dir):
    exp, metrics = ctc_run
    model, tokenizer, topology, meta = load_checkpoint(exp / "best.pt", "cpu")
    total, frames = 0.0, 0
    with torch.no_grad():
        for batch in make_dataloader(data_dir / "cuts_dev-clean-2.jsonl.gz", tokenizer, 15.0):
            h, lengths = model.forward_encoder(batch.features, batch.feature_lengths)
            lp = model.ctc_log_probs(model.ctc_logits(h))
            targets = [torch.tensor([t for w in words for t in w]) for words in batch.transcripts]
            nll = torch.nn.functional.ctc_loss(
                lp.transpose(0, 1).double(), torch.cat(targets), lengths, torch.tensor([len(t) for t in targets]),
                blank=0, reduction="none",
            )  # fmt: skip
            total, frames = total + float(nll.sum()), frames + int(lengths.sum())
    assert metrics["loss"] == pytest.approx(total / frames, rel=1e-4)


def test_checkpoint_round_trip_has_what_alignment_needs(ctc_run, data_dir):
    exp, _ = ctc_run
    raw = torch.load(exp / "last.pt", map_location="cpu")
    model, tokenizer, topology, meta = load_checkpoint(exp / "last.pt", "cpu")
    assert _states_equal(model.state_dict(), raw["model"])
    assert tokenizer.to_dict() == raw["tokenizer"] and topology.num_labels == tokenizer.num_labels
    assert meta["frame_shift_s"] == 0.01 and meta["subsampling"] == model.subsampling == 4
    assert not model.training
    prior = meta["corpus_prior"]
    assert prior.shape == (tokenizer.num_labels,)
    assert float(prior.logsumexp(0)) == pytest.approx(0.0, abs=1e-5)  # a distribution


def test_load_checkpoint_gives_a_model_that_aligns(ctc_run, data_dir):
    exp, _ = ctc_run
    model, tokenizer, topology, meta = load_checkpoint(exp / "best.pt", "cpu")
    batch = next(iter(make_dataloader(data_dir / "cuts_dev-clean-2.jsonl.gz", tokenizer, 15.0)))
    with torch.no_grad():
        h, lengths = model.forward_encoder(batch.features, batch.feature_lengths)
        lp = model.ctc_log_probs(model.ctc_logits(h))
    alignments = viterbi_align(lp, lengths, topology.compile(batch.transcripts))
    for ali, words, n in zip(alignments, batch.transcripts, lengths.tolist()):
        assert len(ali.words) == len(words) and ali.num_frames == n
        times = ali.word_times(meta["frame_shift_s"], meta["subsampling"])
        assert all(0 <= s < e <= n * 0.04 + 1e-9 for s, e in times)


@pytest.mark.parametrize("kill_after", [("last.pt", 1), ("best.pt", 2)], ids=["last-epoch1", "best-epoch2"])
def test_resume_after_kill_gives_same_weights_as_uninterrupted(data_dir, tmp_path, monkeypatch, kill_after):
    """A kill right after a checkpoint write, then ``--resume``: the same last.pt, best.pt and evaluation.

    ``best-epoch2`` dies between epoch 2's best.pt and its last.pt, so the rerun resumes from epoch 1
    with a best.pt already ahead of it.
    """
    extra = ("--epochs", "2", "--topology", "hmm", "--unit", "phone", "--warmup-epochs", "1", "--seed", "3")
    full = tmp_path / "full"
    training.train(_args(data_dir, full, *extra))

    killed = tmp_path / "killed"
    real_save = training_loop.save_checkpoint

    def save_then_die(state, path):
        real_save(state, path)
        if (Path(path).name, state["epoch"]) == kill_after:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        training.train(_args(data_dir, killed, *extra))
    monkeypatch.setattr(training_loop, "save_checkpoint", real_save)
    assert torch.load(killed / "last.pt")["stage"] == "prior-warmup"
    assert torch.load(killed / "best.pt")["epoch"] == kill_after[1]
    training.train(_args(data_dir, killed, *extra, "--resume"))

    a, b = torch.load(full / "last.pt"), torch.load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] and b["stage"] == "main"
    assert _states_equal(a["model"], b["model"])
    a, b = torch.load(full / "best.pt"), torch.load(killed / "best.pt")
    assert a["epoch"] == b["epoch"] and _states_equal(a["model"], b["model"])
    assert json.loads((full / "eval.json").read_text())["loss"] == pytest.approx(
        json.loads((killed / "eval.json").read_text())["loss"], rel=1e-12
    )


def test_hmm_defaults_and_warmup_must_leave_hmm_epochs(tmp_path):
    scales = training.criterion_scales(_args(tmp_path, tmp_path, "--topology", "hmm", "--epochs", "30"))
    assert (scales["posterior_scale"], scales["transition_scale"], scales["prior_scale"]) == (0.7, 0.3, 0.0)
    assert (scales["warmup"], scales["warmup_epochs"]) == ("prior", 10)
    assert scales["warmup_scales"] == {"posterior_scale": 0.5, "transition_scale": 0.2, "prior_scale": 0.3}
    assert training.criterion_scales(_args(tmp_path, tmp_path, "--topology", "hmm", "--epochs", "20"))[
        "warmup_epochs"] == 7
    ctc = training.criterion_scales(_args(tmp_path, tmp_path, "--topology", "ctc", "--epochs", "30"))
    assert (ctc["posterior_scale"], ctc["transition_scale"], ctc["warmup"], ctc["warmup_epochs"]) == (
        1.0, 1.0, "none", 0)
    # the older spelling --ctc-warmup-epochs N is --warmup ctc --warmup-epochs N
    old = training.criterion_scales(_args(tmp_path, tmp_path, "--topology", "hmm", "--ctc-warmup-epochs", "4"))
    assert (old["warmup"], old["warmup_epochs"]) == ("ctc", 4)
    for flags in (("--ctc-warmup-epochs", "3"), ("--warmup-epochs", "3")):
        with pytest.raises(FsalignError, match="warmup-epochs"):
            training.criterion_scales(_args(tmp_path, tmp_path, "--topology", "hmm", "--epochs", "3", *flags))
    with pytest.raises(FsalignError, match="prior"):
        training.criterion_scales(_args(tmp_path, tmp_path, "--prior-scale", "0.3"))


def test_hmm_loops_keep_their_expected_durations_at_every_frame_rate(tmp_path):
    for factor in (2, 4, 6):
        for loop in (0.5, 0.96):
            # a state with loop p lasts 1 / (1 - p) frames of factor * 10 ms on average
            seconds = factor * 0.01 / (1.0 - training.hmm_loop(loop, factor))
            assert seconds == pytest.approx(0.04 / (1.0 - loop))
    params = training.topology_params(_args(tmp_path, tmp_path, "--topology", "hmm", "--subsampling", "2"))
    assert params == pytest.approx({"label_loop": 0.75, "silence_loop": 0.98})
    params = training.topology_params(_args(tmp_path, tmp_path, "--topology", "hmm"))
    assert params == pytest.approx({"label_loop": 0.5, "silence_loop": 0.96})
    given = ("--topology", "hmm", "--subsampling", "2", "--label-loop", "0.6", "--silence-loop", "0.9")
    assert training.topology_params(_args(tmp_path, tmp_path, *given)) == {"label_loop": 0.6, "silence_loop": 0.9}


def test_prior_warmup_scale_is_larger_at_20ms_frames_unless_given(tmp_path):
    def warmup_prior(*flags):
        args = _args(tmp_path, tmp_path, "--topology", "hmm", *flags)
        training.check_arguments(args)
        return training.criterion_scales(args)["warmup_scales"]["prior_scale"]

    assert (warmup_prior(), warmup_prior("--subsampling", "6"), warmup_prior("--subsampling", "2")) == (0.3, 0.3, 0.6)
    assert warmup_prior("--subsampling", "2", "--warmup-prior-scale", "0.3") == 0.3
    with pytest.raises(FsalignError, match="warmup-prior-scale"):
        warmup_prior("--warmup-prior-scale", "-1")


def test_ctc_warmup_extends_while_dev_ler_is_high_up_to_two_thirds(tmp_path):
    args = _args(tmp_path, tmp_path, "--topology", "hmm", "--epochs", "9", "--warmup", "ctc", "--warmup-epochs", "3")
    crit = training.StagedCriterion(args, 5, training.criterion_scales(args), None)
    assert crit.warmup_end == 3 and crit.stage(2) == "ctc-warmup" and crit.stage(3) == "main"
    crit.maybe_extend_warmup(1, 0.9)  # not the last warm-up epoch: no change
    assert crit.warmup_end == 3
    for epoch in (2, 3, 4, 5, 6):
        crit.maybe_extend_warmup(epoch, 0.9)
    assert crit.warmup_end == 6  # capped at 2/3 of the epochs
    crit = training.StagedCriterion(args, 5, training.criterion_scales(args), None)
    crit.maybe_extend_warmup(2, 0.3)  # LER low enough: HMM from epoch 3
    assert crit.warmup_end == 3 and crit.criterion(3).topology is crit.topology
    # the prior warm-up has a fixed length
    args = _args(tmp_path, tmp_path, "--topology", "hmm", "--epochs", "9")
    crit = training.StagedCriterion(args, 5, training.criterion_scales(args), None)
    crit.maybe_extend_warmup(2, 0.9)
    assert crit.warmup_end == 3 and crit.stage(2) == "prior-warmup" and crit.stage(3) == "main"


def test_prior_warmup_loss_is_the_hmm_with_a_stop_gradient_sequence_prior(data_dir, tmp_path):
    """Warm-up: α=0.5, γ=0.2, β=0.3 with the utterance's own prior (eq. 6), gradient only
    through the posterior; main stage: α=0.7, γ=0.3, no prior. Checked against
    full_sum_loss called with the prior computed here."""
    from fsalign.engine.fullsum import full_sum_loss

    args = _args(data_dir, tmp_path, "--topology", "hmm", "--unit", "phone", "--epochs", "6")
    tokenizer = Tokenizer.load(data_dir / "lang_phone")
    crit = training.StagedCriterion(args, tokenizer.num_labels, training.criterion_scales(args), None)
    batch = next(iter(make_dataloader(data_dir / "cuts_dev-clean-2.jsonl.gz", tokenizer, 15, rank=0, world_size=1)))
    torch.manual_seed(0)
    model = ConformerModel(ConformerConfig.from_preset("tiny", tokenizer.num_labels, dropout=0.0, spec_augment=False))
    model.eval()
    graphs = crit.topology.compile(batch.transcripts)
    for epoch, (alpha, gamma, beta) in ((0, (0.5, 0.2, 0.3)), (2, (0.7, 0.3, 0.0))):
        assert crit.stage(epoch) == ("prior-warmup" if epoch < 2 else "main")
        got = crit(model, batch, epoch)["loss"]
        out = model(batch.features, batch.feature_lengths)
        log_probs, lengths = model.ctc_log_probs(out["logits"]), out["lengths"]
        mask = (torch.arange(log_probs.shape[1])[None] < lengths[:, None]).unsqueeze(-1)
        frames_sum = torch.logsumexp(log_probs.detach().masked_fill(~mask, float("-inf")), dim=1)
        seq_prior = frames_sum - lengths.log()[:, None]  # log of the average posterior over valid frames
        nll = full_sum_loss(log_probs, lengths, graphs, posterior_scale=alpha, transition_scale=gamma,
                            prior_scale=beta, log_prior=seq_prior if beta else None)
        assert float(got) == pytest.approx(float(nll.sum() / lengths.sum()), rel=1e-5)
        if beta:  # stop-gradient: d loss / d log p equals that of a constant prior
            model.zero_grad()
            got.backward()
            g_crit = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            model.zero_grad()
            (full_sum_loss(log_probs, lengths, graphs, posterior_scale=alpha, transition_scale=gamma,
                           prior_scale=beta, log_prior=seq_prior).sum() / lengths.sum()).backward()
            g_ref = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_crit, g_ref))
