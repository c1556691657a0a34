"""Tests of the synthetic alignment laboratory (section 6.1): data, models, runner, tables."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fsalign.errors import FsalignError
from fsalign.models.lstm import lstm_recurrence
from fsalign.models.synthetic import BlstmModel, FeedForwardModel
from fsalign.synthetic.data import (
    EPSILON,
    PAD_LABEL,
    SyntheticConfig,
    SyntheticGenerator,
    collate,
)
from fsalign.synthetic.evaluation import evaluate_log_probs, greedy_labels
from fsalign.synthetic.graphs import (
    GraphBank,
    build_topology,
    estimate_loop_probabilities,
)
from fsalign.synthetic.runner import RunConfig, run_group
from fsalign.synthetic.tables import run_table, table_rows
from fsalign.util import single_thread

NOISY = SyntheticConfig(num_words=(1, 3), repetitions=(1, 4), silence_factor=(0.1, 0.6), noise_scale=0.5)


# ---------------------------------------------------------------------- generator
def test_alphabet_and_lexicon_follow_first_appearance():
    cfg = SyntheticConfig()
    assert cfg.alphabet == tuple("helowrdayu")
    assert cfg.num_labels == 11 and cfg.feature_dim == 11
    assert cfg.lexicon[0] == [1, 2, 3, 4]  # h e l o
    assert cfg.lexicon[1] == [5, 4, 6, 3, 7]  # w o r l d


@pytest.mark.parametrize("placement", ["even", "random"])
def test_generator_statistics_match_parameters(placement):
    cfg = SyntheticConfig(num_words=(1, 3), repetitions=(2, 5), silence_factor=(0.2, 0.8), noise_scale=0.0,
                          silence_placement=placement)
    utts = SyntheticGenerator(cfg, seed=3).sample_many(3000)
    lex = cfg.lexicon
    nw = np.array([len(u.word_ids) for u in utts])
    assert set(nw.tolist()) == {1, 2, 3}
    reps = np.array([e - s for u in utts for s, e in u.token_spans])
    assert reps.min() == 2 and reps.max() == 5 and abs(reps.mean() - 3.5) < 0.05
    r = np.array([u.silence_factor for u in utts])
    assert 0.2 <= r.min() and r.max() <= 0.8 and abs(r.mean() - 0.5) < 0.02
    for u in utts[:500]:
        t_a = int((u.alignment != EPSILON).sum())
        t_eps = int((u.alignment == EPSILON).sum())
        assert t_eps == math.floor(u.silence_factor * t_a + 1e-9)
        # the reference alignment spells the transcript, tokens in order
        assert [int(u.alignment[s]) for s, _ in u.token_spans] == [t for w in u.transcript for t in w]
        assert u.transcript == [lex[w] for w in u.word_ids]
        for (s, e), tok in zip(u.token_spans, [t for w in u.transcript for t in w]):
            assert (u.alignment[s:e] == tok).all()
        # word spans: consistent with the token spans, silence only outside words
        k = 0
        inside = np.zeros(u.num_frames, bool)
        for (ws, we), word in zip(u.word_spans, u.transcript):
            assert ws == u.token_spans[k][0] and we == u.token_spans[k + len(word) - 1][1]
            assert (u.alignment[ws:we] != EPSILON).all()
            inside[ws:we] = True
            k += len(word)
        assert (u.alignment[~inside] == EPSILON).all()
        # features are the one-hot alignment without noise (eq. 26, sigma = 0)
        assert np.array_equal(u.features.argmax(1), u.alignment) and np.allclose(u.features.sum(1), 1.0)


def test_silence_fraction_matches_factor():
    # fixed r_sil: silence fraction r/(1+r) up to the floor of T_eps (N_rep = 10 makes T_A a multiple of 10)
    for r in (0.3, 1.0):
        cfg = SyntheticConfig(num_words=(1, 3), repetitions=10, silence_factor=r)
        b = SyntheticGenerator(cfg, 0).batch(400)
        valid = b.alignment != PAD_LABEL
        frac = float((b.alignment[valid] == EPSILON).float().mean())
        assert frac == pytest.approx(r / (1 + r), abs=1e-6)
    # the paper's Table 1 data: "the reference alignment has 21 % silence"
    b = SyntheticGenerator(SyntheticConfig(num_words=(1, 3), repetitions=2, silence_factor=0.3), 0).batch(4000)
    valid = b.alignment != PAD_LABEL
    assert float((b.alignment[valid] == EPSILON).float().mean()) == pytest.approx(0.21, abs=0.01)


def test_even_placement_splits_silence_evenly():
    cfg = SyntheticConfig(num_words=(1, 3), repetitions=(1, 3), silence_factor=(0.5, 2.0))
    for u in SyntheticGenerator(cfg, 1).sample_many(300):
        bounds = [0] + [x for span in u.word_spans for x in span] + [u.num_frames]
        gaps = [e - s for s, e in zip(bounds[0::2], bounds[1::2])]
        assert max(gaps) - min(gaps) <= 1


def test_noise_follows_eq26():
    cfg = SyntheticConfig(num_words=2, repetitions=3, silence_factor=0.5, noise_scale=0.3)
    u = SyntheticGenerator(cfg, 0).sample_many(200)
    xs = np.concatenate([x.features for x in u])
    ys = np.concatenate([x.alignment for x in u])
    onehot = np.eye(cfg.feature_dim, dtype=np.float32)[ys]
    xi = (xs - 0.7 * onehot) / 0.3  # should be standard normal
    assert abs(xi.mean()) < 0.02 and abs(xi.std() - 1.0) < 0.02


def test_generator_is_deterministic_per_seed_and_leaves_global_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    before = (torch.rand(1), np.random.rand())
    torch.manual_seed(0)
    np.random.seed(0)
    a = SyntheticGenerator(NOISY, seed=7).batch(30)
    after = (torch.rand(1), np.random.rand())
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    b = SyntheticGenerator(NOISY, seed=7).batch(30)
    c = SyntheticGenerator(NOISY, seed=8).batch(30)
    assert torch.equal(a.features, b.features) and torch.equal(a.alignment, b.alignment)
    assert a.word_spans == b.word_spans and a.transcripts == b.transcripts
    assert not torch.equal(a.lengths, c.lengths) or not torch.equal(a.features, c.features)


def test_batch_equals_collated_samples():
    a = SyntheticGenerator(NOISY, seed=5).batch(40)
    b = collate(SyntheticGenerator(NOISY, seed=5).sample_many(40))
    for x, y in [(a.features, b.features), (a.alignment, b.alignment), (a.lengths, b.lengths)]:
        assert torch.equal(x, y)
    assert a.transcripts == b.transcripts and a.word_spans == b.word_spans and a.word_ids == b.word_ids
    assert (a.alignment[torch.arange(a.alignment.shape[1]) >= a.lengths[:, None]] == PAD_LABEL).all()


def test_config_rejects_bad_values():
    with pytest.raises(FsalignError):
        SyntheticConfig(num_words=(3, 1))
    with pytest.raises(FsalignError):
        SyntheticConfig(repetitions=0)
    with pytest.raises(FsalignError):
        SyntheticConfig(silence_placement="middle")


def test_loop_estimates_match_closed_form():
    """Table 10 data: one word of L tokens x 10 frames between two silence gaps of 5L frames."""
    cfg = SyntheticConfig(num_words=1, repetitions=10, silence_factor=1.0)
    label_loop, sil_loop = estimate_loop_probabilities(cfg, num_samples=500, seed=4)
    # every token loops 9 times and leaves once (the last one into the final silence)
    assert label_loop == pytest.approx(0.9, abs=1e-12)
    # silence: 5L - 1 loops per gap; the first gap leaves once, the last one ends the utterance
    L = np.array([len(cfg.words[u.word_ids[0]]) for u in SyntheticGenerator(cfg, 4).sample_many(500)])
    loops = (2 * (5 * L - 1)).sum()
    assert sil_loop == pytest.approx(loops / (loops + len(L)), abs=1e-12)


# ---------------------------------------------------------------------- models
def _copy_to_torch_lstm(model: BlstmModel, member: int) -> nn.Module:
    H = model.hidden
    ref = nn.LSTM(model.input_dim, H, model.num_layers, batch_first=True, bidirectional=True)
    # ours (i, f, o, g) -> torch (i, f, g, o)
    perm = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
    with torch.no_grad():
        for layer in range(model.num_layers):
            for d, suffix in enumerate(["", "_reverse"]):
                getattr(ref, f"weight_ih_l{layer}{suffix}").copy_(model.w_ih[layer][member, d].T[perm])
                getattr(ref, f"weight_hh_l{layer}{suffix}").copy_(model.w_hh[layer][member, d].T[perm])
                getattr(ref, f"bias_ih_l{layer}{suffix}").copy_(model.b[layer][member, d][perm])
                getattr(ref, f"bias_hh_l{layer}{suffix}").zero_()
    return ref


def test_blstm_matches_torch_lstm_values_and_gradients():
    torch.manual_seed(0)
    model = BlstmModel(11, 11, hidden=6, num_layers=2, num_models=3)
    model.reset_parameters([4, 5, 6])
    member = 2
    ref = _copy_to_torch_lstm(model, member)
    lengths = torch.tensor([[7, 3, 5, 1]] * 3)
    x = torch.randn(3, 4, 7, 11) * (torch.arange(7) < lengths[..., None])[..., None]
    out = model(x, lengths)[member]
    h, _ = ref(pack_padded_sequence(x[member], lengths[member], batch_first=True, enforce_sorted=False))
    h, _ = pad_packed_sequence(h, batch_first=True, total_length=7)
    expected = h @ model.out_weight[member] + model.out_bias[member]
    mask = torch.arange(7) < lengths[member][:, None]
    assert torch.allclose(out[mask], expected[mask], atol=1e-5)
    g_ours = torch.autograd.grad(out[mask].square().sum(), model.w_hh[0])[0][member, 1]
    g_ref = torch.autograd.grad(expected[mask].square().sum(), ref.weight_hh_l0_reverse)[0]
    perm = torch.cat([torch.arange(0, 12), torch.arange(18, 24), torch.arange(12, 18)])
    assert torch.allclose(g_ours.T[perm], g_ref, atol=1e-5)


def test_lstm_recurrence_gradcheck_with_active_counts():
    gx = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True)
    with single_thread():
        assert torch.autograd.gradcheck(lambda a, b: lstm_recurrence(a, b, [3, 2, 1]), (gx, w))
    with pytest.raises(ValueError):
        lstm_recurrence(gx, w, [1, 2, 1])


def test_members_are_independent_of_each_other():
    """Member e of a seed group equals the single-seed model of seed e (init and training)."""
    cfg = RunConfig(data=NOISY, model="blstm", hidden=6, batch_size=4, steps=3, learning_rate=0.05, eval_size=8,
                    posterior_scale=0.5, prior="posterior_avg", prior_scale=0.3, prior_scope="batch")
    group = run_group(cfg, [11, 12])
    alone = run_group(cfg, [12])
    for m in group[1].metrics:
        assert group[1].metrics[m] == pytest.approx(alone[0].metrics[m], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("model_name", ["ffnn", "blstm"])
@pytest.mark.parametrize("topology", ["hmm", "ctc"])
def test_perfect_init_gives_zero_tse_and_ler_without_training(model_name, topology):
    data = SyntheticConfig(num_words=(1, 3), repetitions=(1, 4), silence_factor=(0.0, 1.0))
    batch = SyntheticGenerator(data, seed=2).batch(60)
    model = FeedForwardModel(11, 11) if model_name == "ffnn" else BlstmModel(11, 11, hidden=12)
    model.perfect_init(scale=10.0)
    with torch.no_grad():
        log_probs = model(batch.features, batch.lengths).log_softmax(-1)
    metrics, alis = evaluate_log_probs(log_probs, batch, build_topology(topology, data))
    assert metrics["ler"] == 0.0 and metrics["tse"] == 0.0
    assert metrics["fw_ce"] < 1e-3
    for ali, ref, n in zip(alis, batch.alignment, batch.lengths.tolist()):
        assert torch.equal(ali.labels, ref[:n])


@pytest.mark.parametrize("variant", [dict(normed_grad=True), dict(blank_separation=True),
                                     dict(normed_grad=True, blank_separation=True, normed_grad_scope="seq")])
def test_normed_gradient_and_blank_separation_train(variant):
    cfg = RunConfig(data=NOISY, topology="ctc", batch_size=4, steps=3, eval_size=8, learning_rate=0.05, **variant)
    res = run_group(cfg, [0, 1])
    for r in res:
        assert all(math.isfinite(v) for v in r.metrics.values()) and math.isfinite(r.final_loss)


def test_perfect_init_needs_enough_units():
    with pytest.raises(FsalignError):
        BlstmModel(11, 11, hidden=5).perfect_init()


# ---------------------------------------------------------------------- metrics, graphs
def test_greedy_decoding_and_metrics_on_hand_checked_example():
    # one utterance "are" (a r e = 8 6 2): frames ε a a r ε e e ε, word span (1, 7)
    data = SyntheticConfig(num_words=1, repetitions=1, silence_factor=0.0)
    ref = torch.tensor([[0, 8, 8, 6, 0, 2, 2, 0]])
    hyp = torch.tensor([[0, 8, 6, 6, 0, 2, 9, 9]])  # greedy: a r e y -> one insertion
    log_probs = torch.full((1, 8, 11), -20.0)
    log_probs[0, torch.arange(8), hyp[0]] = 0.0
    log_probs = log_probs.log_softmax(-1)
    assert greedy_labels(log_probs, torch.tensor([8])) == [[8, 6, 2, 9]]
    from fsalign.synthetic.data import SyntheticBatch

    batch = SyntheticBatch(torch.zeros(1, 8, 11), torch.tensor([8]), ref, [[[8, 6, 2]]], [[(1, 7)]], [[3]])
    metrics, alis = evaluate_log_probs(log_probs, batch, build_topology("ctc", data))
    assert metrics["ler"] == pytest.approx(100.0 / 3)  # one insertion, three reference labels
    # frames 2 (a -> r) and 6 (e -> y) disagree with the reference: CE = 2 * (20 + log Z) / 8
    expected_ce = float(-(log_probs[0, torch.arange(8), ref[0]]).mean())
    assert metrics["fw_ce"] == pytest.approx(expected_ce, rel=1e-6)
    assert metrics["blank_posterior"] == pytest.approx(100.0 * float(log_probs[0, :, 0].exp().mean()), rel=1e-6)
    # CTC Viterbi: a on frame 1, r on 2-3, e on 5 (frames 6-7 must be e or blank): word (1, 6) or (1, 7)
    (ws, we) = (alis[0].words[0].start, alis[0].words[0].end)
    assert ws == 1 and metrics["tse"] == pytest.approx((abs(we - 7)) / 2)


def test_graph_bank_equals_direct_compilation():
    data = SyntheticConfig(num_words=(1, 2), repetitions=2, silence_factor=0.3)
    topo = build_topology("hmm", data)
    bank = GraphBank(topo, data)
    b = SyntheticGenerator(data, 0).batch(12)
    got = bank.compile(b.word_ids)
    want = topo.compile(b.transcripts)
    assert torch.equal(got.min_frames, want.min_frames)
    for i in range(len(b)):
        assert torch.equal(got.fsa[i].arcs.values(), want.fsa[i].arcs.values())


# ---------------------------------------------------------------------- runner / table smoke
def test_table_smoke_json_structure(tmp_path):
    result = run_table(10, seeds=1, workers=1, steps=3, eval_size=12)
    rows = result["rows"]
    assert result["table"] == 10 and len(rows) == len(table_rows(10))
    json.loads(json.dumps(result))  # serialisable
    for row in rows:
        cfg = row["config"]
        assert {"model", "topology", "prior", "stop_grad", "prior_scale", "posterior_scale",
                "transition_scale"} <= set(cfg)
        assert cfg["topology"] in ("hmm", "ctc") and cfg["prior"] in ("none", "static", "seq", "batch")
        assert (cfg["stop_grad"] is None) == (cfg["prior"] not in ("seq", "batch"))
        assert set(row["metrics"]) == {"ler", "fw_ce", "blank_posterior", "tse"}
        for mean, std in row["metrics"].values():
            assert math.isfinite(mean) and math.isfinite(std) and std == 0.0
    first = rows[0]["config"]
    assert (first["prior"], first["stop_grad"], first["prior_scale"], first["posterior_scale"]) == (
        "seq", True, 0.5, 0.5)


def test_recipe_writes_json_and_markdown(tmp_path):
    import runpy
    from pathlib import Path

    recipe = runpy.run_path(str(Path(__file__).resolve().parents[2] / "recipes" / "synthetic" / "run.py"))
    out = tmp_path / "t13.json"
    rc = recipe["main"](["--table", "13", "--seeds", "1", "--workers", "1", "--steps", "2", "--eval-size", "8",
                         "--json", str(out), "--markdown", str(tmp_path / "t13.md")])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["table"] == 13 and len(result["rows"]) == 6
    assert all(row["config"]["steps"] == 2 for row in result["rows"])
    assert "| 6 |" in (tmp_path / "t13.md").read_text()
