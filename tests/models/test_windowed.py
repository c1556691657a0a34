"""The windowed encoder forward against the whole forward.

Exact (float rounding) where the receptive field fits in the context: a Conformer without
encoder layers (the convolutional frontend and the head), with per-utterance CMVN over the whole
recording; and for the full Conformer when the context covers the whole input. Frame counts are
those of a whole forward (``count_frames``).
"""
import pytest
import torch

from fsalign.models.conformer import ConformerConfig, ConformerModel, count_frames
from fsalign.models.windowed import window_spans, windowed_log_probs
from fsalign.util import LongAudio

STEP = {4: 0.04, 6: 0.06}  # seconds per encoder frame at 10 ms features


def _model(subsampling, num_layers, input_norm="utterance", seed=0):
    torch.manual_seed(seed)
    config = ConformerConfig.from_preset("tiny", 6, subsampling=subsampling, dropout=0.0, spec_augment=False,
                                         num_layers=num_layers, input_norm=input_norm)
    return ConformerModel(config).eval()


def _features(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 80, generator=g) * 3 - 7  # log-mel-like offsets
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("sub", [4, 6])
@pytest.mark.parametrize("num_frames", [1, 5, 97, 400, 401, 403])
def test_windows_partition_the_encoder_frames(sub, num_frames):
    total = int(count_frames(torch.tensor([num_frames]), sub))
    spans = window_spans(num_frames, sub, window=7, context=3)
    kept = [f for _, _, lo, hi in spans for f in range(lo, hi)]
    assert kept == list(range(total))
    for start, end, lo, hi in spans:
        assert start % sub == 0 and 0 <= start < end <= num_frames
        assert start // sub <= max(lo - 3, 0) and -(-end // sub) >= min(hi + 3, total)


@pytest.mark.parametrize("sub", [4, 6])
@pytest.mark.parametrize("input_norm", ["utterance", "none"])
def test_frontend_windowed_equals_whole_forward(sub, input_norm):
    model = _model(sub, 0, input_norm)
    x, lengths = _features([1003, 611, 37])
    whole, whole_lengths = model.log_probs(x, lengths)
    windows = LongAudio(window_s=9 * STEP[sub], context_s=2 * STEP[sub])
    got, got_lengths = windowed_log_probs(model, x, lengths, windows)
    assert torch.equal(got_lengths, whole_lengths) and torch.equal(got_lengths, count_frames(lengths, sub))
    for b, n in enumerate(got_lengths.tolist()):
        torch.testing.assert_close(got[b, :n], whole[b, :n], atol=1e-5, rtol=1e-5)
    # without context the first frame of each window sees zero padding instead of the audio before it
    blind, _ = windowed_log_probs(model, x, lengths, LongAudio(window_s=9 * STEP[sub], context_s=0.0))
    assert (blind[0, :int(whole_lengths[0])] - whole[0, :int(whole_lengths[0])]).abs().max() > 1e-3


def test_windows_are_normalised_over_the_whole_recording():
    model = _model(4, 0, "utterance")
    x, lengths = _features([800])
    x[0, :400] += 6.0  # the first half louder: per-window statistics would differ from the recording's
    whole, _ = model.log_probs(x, lengths)
    got, _ = windowed_log_probs(model, x, lengths, LongAudio(window_s=0.4, context_s=0.08))
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=1e-5)
    per_window, _ = model.log_probs(x[:, 400:], torch.tensor([400]))  # the second half normalised alone
    assert (per_window[0] - whole[0, 100:]).abs().max() > 1e-2


@pytest.mark.parametrize("sub", [4, 6])
def test_conformer_windows_seeing_everything_equal_the_whole_forward(sub):
    model = _model(sub, 2)
    x, lengths = _features([997, 450])
    whole, whole_lengths = model.log_probs(x, lengths)
    everything = LongAudio(window_s=11 * STEP[sub], context_s=1000 * STEP[sub])
    got, got_lengths = windowed_log_probs(model, x, lengths, everything)
    assert torch.equal(got_lengths, whole_lengths)
    for b, n in enumerate(got_lengths.tolist()):
        torch.testing.assert_close(got[b, :n], whole[b, :n], atol=1e-4, rtol=1e-4)
    # with a short context attention sees less: close, not equal
    short, short_lengths = model.windowed_log_probs(x, lengths, LongAudio(window_s=11 * STEP[sub], context_s=0.2))
    assert torch.equal(short_lengths, whole_lengths)
    assert (short[0, :int(whole_lengths[0])] - whole[0, :int(whole_lengths[0])]).abs().max() > 1e-5
