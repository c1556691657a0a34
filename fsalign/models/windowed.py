"""The encoder forward in overlapping windows, for recordings too long for one forward pass.

An hour of audio is 360,000 feature frames and 90,000 encoder frames: global self-attention
over it needs (heads x T x T) scores, far beyond any memory. :func:`windowed_log_probs` runs
the model on windows instead. Window k keeps encoder frames [kW, (k+1)W) and sees X more frames
on either side (W = ``window_s``, X = ``context_s`` of :class:`~fsalign.util.LongAudio`, in
encoder frames); its input starts at a multiple of the subsampling factor, so that its encoder
frames fall on the whole forward's, and the kept centres stitched together have exactly the
frames of a whole forward (:func:`fsalign.models.conformer.count_frames`).

Statistics over the whole input come first: a model that normalises its input per utterance
offers ``normalize_input(features, lengths)`` and ``log_probs(..., normalized=True)``; the
recording is normalised once, as a whole forward would, and every window sees those values.

Where the model's receptive field fits in the context (the convolutional frontend alone, a
head on it, any model without attention whose reach is at most X frames) the result equals
the whole forward up to float rounding; the Conformer's self-attention reaches the whole
input, so its windows differ from a whole forward by what attention sees beyond X
(docs/long_audio.md measures it).

Dimension symbols:
  B: utterances.
  T': input feature frames.
  F: feature dimension.
  T: encoder frames, T = ceil(T' / subsampling).
  C: output columns.
"""
import math
from typing import List, Tuple

import torch

from fsalign.util import LongAudio, Seconds

__all__ = ["windowed_log_probs", "WindowedLogProbs", "window_spans"]

_WINDOWS_PER_FORWARD = 4  # windows batched into one forward pass


def window_spans(num_frames: int, subsampling: int, window: int, context: int) -> List[Tuple[int, int, int, int]]:
    """The windows of an utterance of ``num_frames`` input frames.

    Args:
      num_frames: T' of the utterance.
      subsampling: input frames per encoder frame.
      window: W, encoder frames each window keeps (>= 1).
      context: X, encoder frames each window sees on either side of them (>= 0).

    Returns:
      ``(input start, input end, kept start, kept end)`` per window: input frames [start, end)
      go in (start a multiple of ``subsampling``); encoder frames [kept start, kept end) of
      the whole utterance come out of it, at local index ``kept start - start / subsampling``.
    """
    total = -(-num_frames // subsampling)  # upper bound; the model's last window says the exact count
    spans = []
    for kept in range(0, max(total, 1), window):
        start = max(kept - context, 0) * subsampling
        end = min((kept + window + context) * subsampling, num_frames)
        spans.append((start, end, kept, min(kept + window, total)))
    return spans


@torch.no_grad()
def windowed_log_probs(model, features: torch.Tensor, lengths: torch.Tensor, windows: LongAudio = LongAudio(),
                       frame_shift_s: Seconds = 0.01) -> Tuple[torch.Tensor, torch.Tensor]:
    """``model.log_probs`` computed in overlapping windows (module docstring).

    Args:
      model: has ``log_probs(features, lengths) -> (log_probs, lengths)`` and ``subsampling``; may
        have ``normalize_input`` (then ``log_probs`` takes ``normalized=True``).
      features: Tensor of shape (B, T', F).
      lengths: Tensor of shape (B,).
      windows: window and context lengths (``window_s``, ``context_s``).
      frame_shift_s: seconds per input frame.

    Returns:
      Log-probabilities, Tensor of shape (B, T, C), and encoder lengths, Tensor of shape (B,).
    """
    sub = int(getattr(model, "subsampling", 1))
    step = frame_shift_s * sub
    window = max(1, int(round(windows.window_s / step)))
    context = int(math.ceil(windows.context_s / step))
    normalize = getattr(model, "normalize_input", None)
    options = {}
    lengths = lengths.to(features.device)
    if callable(normalize):
        features = normalize(features, lengths)
        options = {"normalized": True}
    outputs, out_lengths = [], []
    for b in range(features.shape[0]):
        spans = window_spans(int(lengths[b]), sub, window, context)
        pieces = []
        for k in range(0, len(spans), _WINDOWS_PER_FORWARD):
            group = spans[k:k + _WINDOWS_PER_FORWARD]
            chunk = torch.nn.utils.rnn.pad_sequence([features[b, s:e] for s, e, _, _ in group], batch_first=True)
            chunk_lengths = torch.tensor([e - s for s, e, _, _ in group], device=features.device)
            log_probs, enc_lengths = model.log_probs(chunk, chunk_lengths, **options)
            for i, (s, _, lo, hi) in enumerate(group):
                local = lo - s // sub
                hi = min(hi, s // sub + int(enc_lengths[i]))  # the last window: the model's count
                pieces.append(log_probs[i, local:local + hi - lo])
        out = torch.cat(pieces, 0)
        outputs.append(out)
        out_lengths.append(out.shape[0])
    padded = torch.nn.utils.rnn.pad_sequence(outputs, batch_first=True)
    return padded, torch.tensor(out_lengths, dtype=torch.int64, device=features.device)


class WindowedLogProbs:
    """Mixin: ``model.windowed_log_probs(features, lengths, windows, frame_shift_s)``, what scorers call."""

    def windowed_log_probs(self, features: torch.Tensor, lengths: torch.Tensor, windows: LongAudio = LongAudio(),
                           frame_shift_s: Seconds = 0.01) -> Tuple[torch.Tensor, torch.Tensor]:
        """:func:`windowed_log_probs` of this model."""
        return windowed_log_probs(self, features, lengths, windows, frame_shift_s)
