"""Plots: the gradient-score matrix of section 5 (paper Figure 1).

Dimension symbols legend:
  S: transcript positions (padded)
  T': input feature frames (padded)
"""
from typing import Optional, Sequence

import torch

from fsalign.alignment import Alignment

__all__ = ["plot_grad_scores"]


def plot_grad_scores(
    G: torch.Tensor,
    num_frames: int,
    num_labels: int,
    token_names: Optional[Sequence[str]] = None,
    alignment: Optional[Alignment] = None,
    frame_shift_s: Optional[float] = None,
    ax=None,
    title: Optional[str] = None,
):
    """Draws ``log softmax_t'(G)`` of one utterance as an image (Figure 1).

    Args:
      G: Tensor of shape (S, T') for one utterance, from
        :func:`fsalign.gradscore.gradient_scores` (``G[b]``).
      num_frames: valid frames T'_b.
      num_labels: valid positions S_b.
      token_names: optional S_b names for the y axis.
      alignment: optional :class:`Alignment` from :func:`fsalign.gradscore.grad_align`;
        its token spans are outlined.
      frame_shift_s: label the x axis in seconds with this frame shift (else frames).
      ax: a matplotlib Axes to draw into (default: a new figure).
      title: optional title.

    Returns:
      The matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not isinstance(G, torch.Tensor) or G.dim() != 2:
        raise ValueError(f"G must be the (S, T') matrix of one utterance, got shape {tuple(getattr(G, 'shape', ()))}")
    if not (0 < num_labels <= G.shape[0] and 0 < num_frames <= G.shape[1]):
        raise ValueError(f"num_labels/num_frames must be in 1..{tuple(G.shape)}, got {num_labels}, {num_frames}")
    if token_names is not None and len(token_names) != num_labels:
        raise ValueError(f"token_names must have {num_labels} entries, got {len(token_names)}")
    scores = G[:num_labels, :num_frames].detach().double().cpu().log_softmax(dim=1).numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, num_frames / 25), max(2.0, num_labels / 4)))
    step = frame_shift_s if frame_shift_s is not None else 1.0
    finite = scores[scores > float("-inf")]
    vmin = float(finite.min()) if finite.size else None
    image = ax.imshow(scores, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                      vmin=vmin, extent=(0, num_frames * step, -0.5, num_labels - 0.5))
    ax.figure.colorbar(image, ax=ax, label="log softmax over time of G")
    if alignment is not None:
        for span in alignment.tokens:
            ax.add_patch(Rectangle((span.start * step, span.position - 0.5), (span.end - span.start) * step, 1.0,
                                   fill=False, edgecolor="red", linewidth=1.0))
    if token_names is not None:
        ax.set_yticks(range(num_labels))
        ax.set_yticklabels(token_names)
    ax.set_xlabel("time [s]" if frame_shift_s is not None else "input frame")
    ax.set_ylabel("transcript position")
    if title:
        ax.set_title(title)
    return ax
