"""Posterior models for the synthetic data: FFNN (eq. 28) and BLSTM.

Both map features to logits; the runner applies the softmax (eq. 4) or the
blank-separated output (eq. 15-17). Each model holds ``num_models`` = E
independent members (one per training seed) with a leading member axis on
every parameter, so the seeds of a table row train in one process with
batched matrix products; Adam is elementwise, so this is exactly E separate
trainings. Inputs of shape (B, T, D) are accepted when E = 1.

Both can be *perfectly initialised* (appendix A.5): the network computes ``c``
times a (squashed) identity, so on noise-free one-hot features the logits are
``c`` on the true label and 0 elsewhere, and the posteriors are as close to the
ground truth as ``c`` makes them.

Dimension symbols legend:
  E: members (seeds)
  B: batch size
  T: frames (padded)
  D: feature dimension (= C on the synthetic data)
  H: LSTM units per direction
  C: alignment labels (score-matrix columns)
"""
import math
from typing import Optional, Sequence

import torch
from torch import nn

from fsalign.errors import FsalignError
from fsalign.models.lstm import lstm_recurrence

__all__ = ["FeedForwardModel", "BlstmModel", "build_model", "MODEL_NAMES"]

MODEL_NAMES = ("ffnn", "blstm")


def _with_member_axis(features: torch.Tensor, lengths: Optional[torch.Tensor], num_models: int):
    """Returns (features (E, B, T, D), lengths (E, B) or None, whether to squeeze the output)."""
    if features.dim() == 3:
        if num_models != 1:
            raise FsalignError(
                f"features of shape (B, T, D) need a single-member model, this one has {num_models} members; "
                "pass shape (E, B, T, D)"
            )
        features = features.unsqueeze(0)
        lengths = None if lengths is None else lengths.reshape(1, -1)
        return features, lengths, True
    if features.dim() != 4 or features.shape[0] != num_models:
        raise FsalignError(f"features must have shape ({num_models}, B, T, D), got {tuple(features.shape)}")
    if lengths is not None and lengths.dim() == 1:
        lengths = lengths.unsqueeze(0).expand(num_models, -1)
    return features, lengths, False


def _uniform_(t: torch.Tensor, bound: float, gen: torch.Generator) -> None:
    t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype).mul_(2 * bound).sub_(bound))


def _member_generators(seeds: Sequence[int], num_models: int):
    if len(seeds) != num_models:
        raise FsalignError(f"need one seed per member ({num_models}), got {len(seeds)}")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class FeedForwardModel(nn.Module):
    """Single linear layer, ``logits = x W + b`` (eq. 28).

    Args:
      input_dim: D.
      num_labels: C.
      num_models: E.
    """

    def __init__(self, input_dim: int, num_labels: int, num_models: int = 1):
        super().__init__()
        self.input_dim, self.num_labels, self.num_models = int(input_dim), int(num_labels), int(num_models)
        self.weight = nn.Parameter(torch.empty(self.num_models, self.input_dim, self.num_labels))
        self.bias = nn.Parameter(torch.empty(self.num_models, self.num_labels))
        self.reset_parameters(range(self.num_models))

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int]) -> None:
        """PyTorch's ``nn.Linear`` initialisation, member e drawn from ``seeds[e]``."""
        bound = 1.0 / math.sqrt(self.input_dim)
        for e, gen in enumerate(_member_generators(list(seeds), self.num_models)):
            w, b = torch.empty(self.input_dim, self.num_labels), torch.empty(self.num_labels)
            _uniform_(w, bound, gen)
            _uniform_(b, bound, gen)
            self.weight[e].copy_(w)
            self.bias[e].copy_(b)

    def forward(self, features: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits.

        Args:
          features: Tensor of shape (E, B, T, D), or (B, T, D) when E = 1.
          lengths: unused (the model is framewise).

        Returns:
          Tensor of shape (E, B, T, C), or (B, T, C).
        """
        x, _, squeeze = _with_member_axis(features, lengths, self.num_models)
        E, B, T, D = x.shape
        out = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(E, B * T, D), self.weight).view(E, B, T, -1)
        return out[0] if squeeze else out

    @torch.no_grad()
    def perfect_init(self, scale: float = 10.0) -> None:
        """``W = scale * I``, ``b = 0`` for every member (needs D == C)."""
        if self.input_dim != self.num_labels:
            raise FsalignError(
                f"perfect init needs input_dim == num_labels, got {self.input_dim} and {self.num_labels}"
            )
        self.weight.copy_(torch.eye(self.num_labels).expand_as(self.weight) * float(scale))
        self.bias.zero_()


class BlstmModel(nn.Module):
    """Bidirectional LSTM layers and a linear output layer.

    The LSTM cell is PyTorch's, with the gate columns ordered (input, forget,
    output, cell) and one bias per gate (initialised like ``nn.LSTM``'s two
    biases summed); the recurrence is :func:`fsalign.models.lstm.lstm_recurrence`. Both directions
    of all members run as one batched recurrence; the backward direction reads
    every sequence reversed within its own length, so padding never reaches a
    valid frame.

    Args:
      input_dim: D.
      num_labels: C.
      hidden: H, units per direction (the paper: 20 or 100).
      num_layers: LSTM layers (the paper: 2).
      num_models: E.
    """

    def __init__(self, input_dim: int, num_labels: int, hidden: int = 20, num_layers: int = 2, num_models: int = 1):
        super().__init__()
        if hidden < 1 or num_layers < 1:
            raise FsalignError(f"hidden and num_layers must be >= 1, got {hidden} and {num_layers}")
        self.input_dim, self.num_labels = int(input_dim), int(num_labels)
        self.hidden, self.num_layers, self.num_models = int(hidden), int(num_layers), int(num_models)
        E, H = self.num_models, self.hidden
        self.w_ih = nn.ParameterList()
        self.w_hh = nn.ParameterList()
        self.b = nn.ParameterList()
        for layer in range(self.num_layers):
            in_dim = self.input_dim if layer == 0 else 2 * H
            self.w_ih.append(nn.Parameter(torch.empty(E, 2, in_dim, 4 * H)))
            self.w_hh.append(nn.Parameter(torch.empty(E, 2, H, 4 * H)))
            self.b.append(nn.Parameter(torch.empty(E, 2, 4 * H)))
        self.out_weight = nn.Parameter(torch.empty(E, 2 * H, self.num_labels))
        self.out_bias = nn.Parameter(torch.empty(E, self.num_labels))
        self.reset_parameters(range(E))

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int]) -> None:
        """PyTorch's ``nn.LSTM``/``nn.Linear`` initialisation, member e drawn from ``seeds[e]``."""
        H = self.hidden
        bound = 1.0 / math.sqrt(H)
        out_bound = 1.0 / math.sqrt(2 * H)
        for e, gen in enumerate(_member_generators(list(seeds), self.num_models)):
            for layer in range(self.num_layers):
                for p in (self.w_ih[layer], self.w_hh[layer]):
                    tmp = torch.empty(p.shape[1:])
                    _uniform_(tmp, bound, gen)
                    p[e].copy_(tmp)
                b1, b2 = torch.empty(self.b[layer].shape[1:]), torch.empty(self.b[layer].shape[1:])
                _uniform_(b1, bound, gen)
                _uniform_(b2, bound, gen)
                self.b[layer][e].copy_(b1 + b2)
            w, b = torch.empty(self.out_weight.shape[1:]), torch.empty(self.num_labels)
            _uniform_(w, out_bound, gen)
            _uniform_(b, out_bound, gen)
            self.out_weight[e].copy_(w)
            self.out_bias[e].copy_(b)

    def _layer(self, x: torch.Tensor, layer: int, active) -> torch.Tensor:
        """One bidirectional layer on (E, 2, B, T, in) inputs (direction 1 already reversed)."""
        E, _, B, T, F = x.shape
        H = self.hidden
        G = 2 * E
        gx = torch.baddbmm(
            self.b[layer].reshape(G, 1, 4 * H), x.reshape(G, B * T, F), self.w_ih[layer].reshape(G, F, 4 * H)
        )
        out = lstm_recurrence(gx.view(G, B, T, 4 * H), self.w_hh[layer].reshape(G, H, 4 * H), active)
        return out.reshape(E, 2, B, T, H)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits.

        Args:
          features: Tensor of shape (E, B, T, D), or (B, T, D) when E = 1.
          lengths: Tensor of shape (E, B) or (B,): valid frames per sequence.

        Returns:
          Tensor of shape (E, B, T, C), or (B, T, C); padding frames hold
          values that depend on padding only.
        """
        if lengths is None:
            raise FsalignError("BlstmModel needs lengths of shape (E, B) or (B,), got None")
        x, lengths, squeeze = _with_member_axis(features, lengths, self.num_models)
        E, B, T, _ = x.shape
        lengths = lengths.to(x.device)
        # every member's sequences by decreasing length: the recurrence skips finished ones
        lengths, order = lengths.sort(dim=1, descending=True, stable=True)
        x = x.gather(1, order[:, :, None, None].expand_as(x))
        active = (lengths.unsqueeze(-1) > torch.arange(T, device=x.device)).sum(1).amax(0).tolist()
        rev = lengths.unsqueeze(-1) - 1 - torch.arange(T, device=x.device)  # (E, B, T)
        valid = (rev >= 0).unsqueeze(-1).to(x.dtype)
        rev = rev.clamp(min=0).unsqueeze(-1)

        def reverse(z: torch.Tensor) -> torch.Tensor:  # reverse each sequence within its length
            return z.gather(2, rev.expand(-1, -1, -1, z.shape[-1])) * valid

        h = x
        for layer in range(self.num_layers):
            out = self._layer(torch.stack([h, reverse(h)], dim=1), layer, active)
            h = torch.cat([out[:, 0], reverse(out[:, 1])], dim=-1)
        logits = torch.baddbmm(self.out_bias.unsqueeze(1), h.reshape(E, B * T, -1), self.out_weight)
        logits = logits.view(E, B, T, -1)
        inverse = torch.empty_like(order).scatter_(1, order, torch.arange(B, device=x.device).expand(E, -1))
        logits = logits.gather(1, inverse[:, :, None, None].expand_as(logits))
        return logits[0] if squeeze else logits

    @torch.no_grad()
    def perfect_init(self, scale: float = 10.0, gate_bias: float = 30.0, cell_gain: float = 5.0) -> None:
        """Initialises every member to ``scale`` times a squashed identity.

        Every LSTM layer copies its input: input and output gates open
        (bias ``+gate_bias``), forget gate shut (bias ``-gate_bias``), cell
        input ``tanh(cell_gain * x_j)`` on unit j of both directions, recurrent
        weights 0; so ``h_j = tanh(tanh(cell_gain * x_j))``: a fixed level L for
        ``x_j = 1`` and 0 for ``x_j = 0``. The output layer reads unit j of the
        forward direction with weight ``scale / L``. Needs H >= D and D == C.
        """
        D, H = self.input_dim, self.hidden
        if D != self.num_labels:
            raise FsalignError(f"perfect init needs input_dim == num_labels, got {D} and {self.num_labels}")
        if H < D:
            raise FsalignError(f"perfect init needs hidden >= input_dim, got hidden {H} < {D}")
        j = torch.arange(D)
        level = 1.0
        for layer in range(self.num_layers):
            w_ih, w_hh, b = self.w_ih[layer], self.w_hh[layer], self.b[layer]
            w_ih.zero_(), w_hh.zero_(), b.zero_()
            b[..., 0:H] = gate_bias  # input gate
            b[..., H : 2 * H] = -gate_bias  # forget gate
            b[..., 2 * H : 3 * H] = gate_bias  # output gate
            gain = cell_gain / level  # the input on unit j is `level` for the true label
            if layer == 0:
                w_ih[:, :, j, 3 * H + j] = gain
            else:  # unit j of both directions of the layer below
                w_ih[:, :, j, 3 * H + j] = gain / 2
                w_ih[:, :, H + j, 3 * H + j] = gain / 2
            level = math.tanh(math.tanh(cell_gain))
        self.out_weight.zero_()
        self.out_bias.zero_()
        self.out_weight[:, j, j] = float(scale) / level


def build_model(
    name: str, input_dim: int, num_labels: int, hidden: int = 20, num_layers: int = 2, num_models: int = 1
) -> nn.Module:
    """``"ffnn"`` -> :class:`FeedForwardModel`, ``"blstm"`` -> :class:`BlstmModel`."""
    if name == "ffnn":
        return FeedForwardModel(input_dim, num_labels, num_models=num_models)
    if name == "blstm":
        return BlstmModel(input_dim, num_labels, hidden=hidden, num_layers=num_layers, num_models=num_models)
    raise FsalignError(f"model must be one of {MODEL_NAMES}, got {name!r}")
