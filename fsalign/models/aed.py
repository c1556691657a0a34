"""Small Transformer attention decoder for the auxiliary AED loss (A.4.6) and AED gradient scores.

The decoder vocabulary is the model's C output columns; the blank/silence column never
occurs in a transcript, so it doubles as BOS and EOS.

Dimension symbols:
  B: batch size.
  T: encoder frames.
  D: model dimension.
  S: transcript tokens (padded).
  C: vocabulary = output columns.
"""
import math

import torch
import torch.nn as nn

from fsalign.util import valid_frame_mask

__all__ = ["AedDecoder"]


class AedDecoder(nn.Module):
    """``nn.TransformerDecoder`` over the encoder output, teacher-forced.

    Args:
      num_labels: C.
      d_model: D.
      num_layers: decoder layers.
      num_heads: attention heads.
      ffn_dim: feed-forward dimension.
      dropout: dropout.
      bos_eos: the column used as BOS and EOS (the blank/silence column).
      max_len: longest transcript (positional encoding table size).
    """

    def __init__(self, num_labels: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 dropout: float = 0.1, bos_eos: int = 0, max_len: int = 2048):
        super().__init__()
        self.num_labels = num_labels
        self.bos_eos = bos_eos
        self.embed = nn.Embedding(num_labels, d_model)
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)
        layer = nn.TransformerDecoderLayer(d_model, num_heads, ffn_dim, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.out = nn.Linear(d_model, num_labels)
        self.scale = math.sqrt(d_model)

    def forward(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probabilities.

        Args:
          encoder_out: Tensor of shape (B, T, D).
          encoder_lengths: Tensor of shape (B,).
          targets: LongTensor of shape (B, S), token ids (padding ignored).
          target_lengths: Tensor of shape (B,).

        Returns:
          Tensor of shape (B, S+1, C): row s predicts token s+1 after BOS and tokens 1..s;
          row ``target_lengths[b]`` predicts EOS.
        """
        b, s = targets.shape
        if s + 1 > self.pe.shape[0]:
            raise ValueError(f"transcripts of at most {self.pe.shape[0] - 1} tokens, got {s}")
        device = encoder_out.device
        bos = torch.full((b, 1), self.bos_eos, dtype=torch.long, device=device)
        inputs = torch.cat([bos, targets.to(device).clamp(0, self.num_labels - 1)], dim=1)  # (B, S+1)
        x = self.embed(inputs) * self.scale + self.pe[: s + 1]
        causal = torch.triu(torch.ones(s + 1, s + 1, dtype=torch.bool, device=device), diagonal=1)
        tgt_pad = ~valid_frame_mask(target_lengths.to(device) + 1, s + 1, batch_size=b)
        mem_pad = ~valid_frame_mask(encoder_lengths.to(device), encoder_out.shape[1], batch_size=b)
        h = self.decoder(x, encoder_out, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
        return self.out(h).log_softmax(dim=-1)

    def nll(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor, targets: torch.Tensor,
            target_lengths: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of targets + EOS per utterance, Tensor of shape (B,)."""
        log_probs = self.forward(encoder_out, encoder_lengths, targets, target_lengths)
        b, s1, _ = log_probs.shape
        device = log_probs.device
        target_lengths = target_lengths.to(device)
        gold = torch.cat([targets.to(device), torch.zeros(b, 1, dtype=torch.long, device=device)], dim=1)
        gold = gold.scatter(1, target_lengths.unsqueeze(1), self.bos_eos)  # EOS after the last token
        mask = valid_frame_mask(target_lengths + 1, s1, batch_size=b)
        picked = log_probs.gather(-1, gold.clamp(0, self.num_labels - 1).unsqueeze(-1)).squeeze(-1)
        return -(picked * mask).sum(dim=1)
