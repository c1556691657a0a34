"""Conformer acoustic model: conv subsampling, torchaudio Conformer encoder, CTC/HMM head.

The model maps log-mel features to a score matrix over the C columns of a tokenizer
(column 0 = blank/silence). It satisfies :mod:`fsalign.scores.gradscore`'s ``CtcModel`` (and,
with an auxiliary decoder, ``AedModel``) protocol: ``forward_encoder``, ``ctc_logits``,
``ctc_log_probs``, ``aed_log_probs``, ``subsampling`` and ``blank``.

Dimension symbols:
  B: batch size.
  T': input feature frames (10 ms).
  F: feature dimension (80).
  T: encoder frames, T = ceil(T' / subsampling).
  D: model dimension.
  C: output columns (blank/silence included).
  S: transcript tokens.
"""
from dataclasses import asdict, dataclass, fields
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torchaudio

from fsalign.models.aed import AedDecoder
from fsalign.models.heads import BlankSeparatedHead, SoftmaxHead
from fsalign.models.windowed import WindowedLogProbs
from fsalign.scores.posterior import blank_separated_log_probs
from fsalign.util import valid_frame_mask

__all__ = ["ConformerConfig", "ConformerModel", "ConvSubsampling", "PRESETS", "SUBSAMPLING"]

SUBSAMPLING: Dict[int, Tuple[Tuple[int, int], ...]] = {
    # factor -> (kernel, stride) of each 2-D convolution of the frontend
    2: ((3, 2), (3, 1)),  # 20 ms frames from 10 ms features
    4: ((3, 2), (3, 2)),  # 40 ms (the default)
    6: ((3, 2), (5, 3)),  # 60 ms
}

PRESETS: Dict[str, Dict[str, int]] = {
    # for tests: seconds per epoch on a few utterances
    "tiny": dict(d_model=64, num_layers=2, num_heads=2, ffn_dim=128, kernel_size=15, conv_channels=32),
    # CPU default: ~2.5M parameters
    "small": dict(d_model=144, num_layers=4, num_heads=4, ffn_dim=576, kernel_size=31, conv_channels=32),
    "medium": dict(d_model=256, num_layers=12, num_heads=4, ffn_dim=1024, kernel_size=31, conv_channels=128),
    # the paper's 12-layer encoder (A.4.5, ~75M parameters with the paper's head)
    "large": dict(d_model=512, num_layers=12, num_heads=8, ffn_dim=2048, kernel_size=31, conv_channels=256),
}


@dataclass
class ConformerConfig:
    """Everything needed to rebuild a :class:`ConformerModel` (stored in checkpoints).

    Attributes:
      num_labels: C, output columns, blank/silence (column ``blank``) included.
      num_features: F.
      d_model, num_layers, num_heads, ffn_dim, kernel_size: encoder size.
      subsampling: 2, 4 or 6 (conv frontend factor, :data:`SUBSAMPLING`).
      conv_channels: channels of the frontend convolutions.
      dropout: dropout in the encoder and the frontend.
      blank_sep: blank-separated output head (eq. 15-17) instead of a full softmax.
      blank: blank/silence column.
      aed_layers: layers of the auxiliary attention decoder (0 = none).
      input_norm: ``"utterance"``: each utterance's features are normalised to zero mean and
        unit variance per dimension over its valid frames (CMVN) before anything else (the raw
        log-mel values lie around -15..5); ``"none"``: as given.
      spec_augment: apply SpecAugment in training mode.
      freq_mask_param, num_freq_masks, time_mask_param, num_time_masks, time_mask_ratio:
        SpecAugment masks (widths in bins / input frames; a time mask is at most
        ``time_mask_ratio`` of the utterance).
    """

    num_labels: int
    num_features: int = 80
    d_model: int = 144
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 576
    kernel_size: int = 31
    subsampling: int = 4
    conv_channels: int = 64
    dropout: float = 0.1
    blank_sep: bool = False
    blank: int = 0
    aed_layers: int = 0
    input_norm: str = "utterance"
    spec_augment: bool = True
    freq_mask_param: int = 27
    num_freq_masks: int = 2
    time_mask_param: int = 40
    num_time_masks: int = 2
    time_mask_ratio: float = 0.2

    @classmethod
    def from_preset(cls, preset: str, num_labels: int, **overrides) -> "ConformerConfig":
        """A config from a size preset (``tiny``, ``small``, ``medium``, ``large``) and overrides."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        return cls(num_labels=num_labels, **{**PRESETS[preset], **overrides})

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields (inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "ConformerConfig":
        """Inverse of :meth:`to_dict`; unknown fields raise ValueError, a missing ``input_norm`` means ``"none"``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ConformerConfig fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**{"input_norm": "none", **data})  # checkpoints older than input_norm had none


def _conv_out(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    # kernel 2p+1, padding p, stride s: out = ceil(T / s)
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


class ConvSubsampling(nn.Module):
    """Conv2d subsampling frontend (ESPnet/icefall ``Conv2dSubsampling``), T = ceil(T'/factor).

    Factor 4: two 3x3 convolutions with stride 2; factor 6: a 3x3 stride-2 then a 5x5
    stride-3 convolution; factor 2: a 3x3 stride-2 then a 3x3 stride-1 convolution
    (:data:`SUBSAMPLING`). Frames beyond each utterance's length are zeroed after every
    convolution so that an utterance's output does not depend on its batch.

    Args:
      num_features: F.
      d_model: D.
      factor: 2, 4 or 6.
      channels: convolution channels.
      dropout: dropout after the output projection.
    """

    def __init__(self, num_features: int, d_model: int, factor: int = 4, channels: int = 64, dropout: float = 0.1):
        super().__init__()
        if factor not in SUBSAMPLING:
            raise ValueError(f"subsampling factor must be one of {sorted(SUBSAMPLING)}, got {factor}")
        specs = SUBSAMPLING[factor]
        self.factor = factor
        self.strides = [s for _, s in specs]
        convs, in_ch, freq = [], 1, num_features
        for kernel, stride in specs:
            convs.append(nn.Conv2d(in_ch, channels, kernel, stride=stride, padding=kernel // 2))
            in_ch = channels
            freq = (freq + 2 * (kernel // 2) - kernel) // stride + 1
        self.convs = nn.ModuleList(convs)
        self.out = nn.Linear(channels * freq, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Subsample.

        Args:
          x: Tensor of shape (B, T', F).
          lengths: Tensor of shape (B,).

        Returns:
          Tensor of shape (B, T, D) and lengths, Tensor of shape (B,).
        """
        mask = valid_frame_mask(lengths, x.shape[1], batch_size=x.shape[0])
        h = (x * mask.unsqueeze(-1).to(x.dtype)).unsqueeze(1)  # (B, 1, T', F)
        for conv, stride in zip(self.convs, self.strides):
            h = torch.relu(conv(h))
            lengths = _conv_out(lengths, stride)
            mask = valid_frame_mask(lengths, h.shape[2], batch_size=h.shape[0])
            h = h * mask[:, None, :, None].to(h.dtype)
        b, c, t, f = h.shape
        h = self.out(h.transpose(1, 2).reshape(b, t, c * f))
        return self.dropout(h), lengths


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al., 2019), independent per utterance; identity in eval mode."""

    def __init__(self, config: ConformerConfig):
        super().__init__()
        self.config = config
        self.freq = torchaudio.transforms.FrequencyMasking(config.freq_mask_param, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(config.time_mask_param, iid_masks=True, p=config.time_mask_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor of shape (B, T', F) -> masked copy (training mode only)."""
        if not self.training:
            return x
        h = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T')
        for _ in range(self.config.num_freq_masks):
            h = self.freq(h)
        for _ in range(self.config.num_time_masks):
            h = self.time(h)
        return h.squeeze(1).transpose(1, 2)


class ConformerModel(WindowedLogProbs, nn.Module):
    """Conv subsampling + ``torchaudio.models.Conformer`` + softmax/blank-separated head (+ AED decoder).

    ``windowed_log_probs`` (:mod:`fsalign.models.windowed`) encodes recordings too long for one
    forward pass in overlapping windows, normalised over the whole recording.

    Args:
      config: see :class:`ConformerConfig`.
    """

    def __init__(self, config: ConformerConfig):
        super().__init__()
        if config.num_labels < 2:
            raise ValueError(f"num_labels must be >= 2 (blank + a token), got {config.num_labels}")
        if config.input_norm not in ("utterance", "none"):
            raise ValueError(f"input_norm must be 'utterance' or 'none', got {config.input_norm!r}")
        if not 0 <= config.blank < config.num_labels:
            raise ValueError(f"blank must be in [0, {config.num_labels}), got {config.blank}")
        self.config = config
        self.subsampling = config.subsampling
        self.blank = config.blank
        self.num_labels = config.num_labels
        self.spec_augment = SpecAugment(config) if config.spec_augment else None
        self.frontend = ConvSubsampling(config.num_features, config.d_model, config.subsampling,
                                        channels=config.conv_channels, dropout=config.dropout)
        self.encoder = torchaudio.models.Conformer(
            input_dim=config.d_model,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            num_layers=config.num_layers,
            depthwise_conv_kernel_size=config.kernel_size,
            dropout=config.dropout,
        )
        # torchaudio masks padding only in attention; the depthwise convolution would mix
        # padding frames into valid ones, so its input is masked (batch independence)
        self._conv_mask: Optional[torch.Tensor] = None
        for layer in self.encoder.conformer_layers:
            layer.conv_module.sequential[2].register_forward_pre_hook(self._mask_conv_input)
        if config.blank_sep:
            self.head = BlankSeparatedHead(config.d_model, config.num_labels, blank=config.blank)
        else:
            self.head = SoftmaxHead(config.d_model, config.num_labels)
        self.decoder = (
            AedDecoder(config.num_labels, config.d_model, config.aed_layers, config.num_heads,
                       config.ffn_dim, config.dropout, bos_eos=config.blank)
            if config.aed_layers > 0 else None
        )  # fmt: skip

    def _mask_conv_input(self, module: nn.Module, inputs: Tuple[torch.Tensor]) -> Tuple[torch.Tensor]:
        if self._conv_mask is None:
            return inputs
        return (inputs[0] * self._conv_mask.unsqueeze(1).to(inputs[0].dtype),)  # (B, D, T)

    @property
    def num_params(self) -> int:
        """Total number of parameter elements (trainable or not)."""
        return sum(p.numel() for p in self.parameters())

    def normalize_input(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """The features as the encoder sees them: per-utterance CMVN with ``input_norm="utterance"``, else as given.

        Args:
          features: Tensor of shape (B, T', F).
          feature_lengths: Tensor of shape (B,).

        Returns:
          Tensor of shape (B, T', F).
        """
        if self.config.input_norm == "utterance":
            return utterance_cmvn(features, feature_lengths.to(features.device))
        return features

    def forward_encoder(
        self, features: torch.Tensor, feature_lengths: torch.Tensor, normalized: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder output.

        Args:
          features: Tensor of shape (B, T', F).
          feature_lengths: Tensor of shape (B,).
          normalized: the features went through :meth:`normalize_input` already (e.g. over a
            whole recording, of which these are windows).

        Returns:
          Tensor of shape (B, T, D) and lengths, Tensor of shape (B,) (T = ceil(T'/subsampling)).
        """
        if features.dim() != 3 or features.shape[-1] != self.config.num_features:
            raise ValueError(
                f"features must be a tensor of shape (B, T', {self.config.num_features}), got {tuple(features.shape)}"
            )
        feature_lengths = feature_lengths.to(features.device)
        if not normalized:
            features = self.normalize_input(features, feature_lengths)
        if self.spec_augment is not None:
            features = self.spec_augment(features)
        h, lengths = self.frontend(features, feature_lengths)
        self._conv_mask = valid_frame_mask(lengths, h.shape[1], batch_size=h.shape[0])
        try:
            h, lengths = self.encoder(h, lengths)
        finally:
            self._conv_mask = None
        return h, lengths

    def ctc_logits(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, T, D) -> logits (B, T, C)."""
        return self.head(encoder_out)

    def ctc_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, C) -> normalised log-probabilities (B, T, C): log_softmax or eq. 15-17."""
        if self.config.blank_sep:
            return blank_separated_log_probs(logits, blank=self.blank)
        return logits.log_softmax(dim=-1)

    def log_probs(self, features: torch.Tensor, feature_lengths: torch.Tensor,
                  normalized: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features -> normalised log posteriors: the encoder, the head and its normalisation.

        Args:
          features: Tensor of shape (B, T', F).
          feature_lengths: Tensor of shape (B,).
          normalized: as in :meth:`forward_encoder`.

        Returns:
          Log-probabilities, Tensor of shape (B, T, C), and encoder lengths, Tensor of shape (B,).
        """
        h, lengths = self.forward_encoder(features, feature_lengths, normalized)
        return self.ctc_log_probs(self.ctc_logits(h)), lengths

    def aed_log_probs(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced decoder log-probabilities (B, S+1, C); see :class:`fsalign.models.aed.AedDecoder`."""
        if self.decoder is None:
            raise ValueError("this model has no AED decoder (build it with aed_layers > 0)")
        return self.decoder(encoder_out, encoder_lengths, targets, target_lengths)

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        target_lengths: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """One pass for training (the DDP entry point).

        Args:
          features: Tensor of shape (B, T', F).
          feature_lengths: Tensor of shape (B,).
          targets: LongTensor of shape (B, S), padded token ids (for the AED loss), or None.
          target_lengths: Tensor of shape (B,), or None.

        Returns:
          dict with ``logits`` (B, T, C), ``lengths`` (B,), ``encoder_out`` (B, T, D) and,
          with a decoder and targets, ``aed_nll`` (B,): the decoder's summed NLL incl. EOS.
        """
        h, lengths = self.forward_encoder(features, feature_lengths)
        out = {"logits": self.ctc_logits(h), "lengths": lengths, "encoder_out": h}
        if self.decoder is not None and targets is not None:
            out["aed_nll"] = self.decoder.nll(h, lengths, targets, target_lengths)
        return out


def utterance_cmvn(features: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance mean and variance normalisation over valid frames; padding stays zero.

    Args:
      features: Tensor of shape (B, T', F).
      lengths: Tensor of shape (B,).
      eps: added to the variance before the inverse square root.

    Returns:
      Tensor of shape (B, T', F).
    """
    mask = valid_frame_mask(lengths, features.shape[1], batch_size=features.shape[0]).unsqueeze(-1).to(features.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, 1)
    mean = (features * mask).sum(dim=1, keepdim=True) / count
    var = (((features - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (features - mean) * torch.rsqrt(var + eps) * mask


def count_frames(feature_lengths: torch.Tensor, subsampling: int) -> torch.Tensor:
    """Encoder frames of each utterance, ceil(T' / subsampling) for every factor; see ConvSubsampling."""
    lengths = feature_lengths
    for _, s in SUBSAMPLING[subsampling]:
        lengths = _conv_out(lengths, s)
    return lengths

