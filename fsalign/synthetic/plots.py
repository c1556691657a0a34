"""Posterior plots: p(y|x) over time with the true and the Viterbi alignment.

Dimension symbols legend:
  T: frames of one utterance
  C: alignment labels (score-matrix columns)
"""
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["plot_posteriors"]


def plot_posteriors(
    log_probs: torch.Tensor,
    reference: torch.Tensor,
    viterbi: Optional[torch.Tensor],
    path: Union[str, Path],
    labels: Optional[Sequence[str]] = None,
    title: str = "",
) -> Path:
    """Writes a PNG: posteriors as an image, reference and Viterbi labels as markers.

    Args:
      log_probs: Tensor of shape (T, C), log-posteriors of one utterance (valid frames only).
      reference: LongTensor of shape (T,), the true label per frame.
      viterbi: LongTensor of shape (T,), the Viterbi label per frame, or None.
      path: output file (parent folders are created).
      labels: names of the C columns (default: indices).
      title: figure title.

    Returns:
      The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = log_probs.detach().float().exp().cpu().numpy().T  # (C, T)
    C, T = probs.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * T + 2.0), 0.3 * C + 1.5))
    im = ax.imshow(probs, aspect="auto", origin="lower", cmap="Greys", vmin=0.0, vmax=1.0,
                   interpolation="nearest")
    frames = np.arange(T)
    ax.plot(frames, reference.cpu().numpy(), "o", mfc="none", mec="tab:green", ms=7, label="true")
    if viterbi is not None:
        ax.plot(frames, viterbi.cpu().numpy(), "x", color="tab:red", ms=5, label="Viterbi")
    ax.set_yticks(range(C))
    ax.set_yticklabels(list(labels) if labels is not None else [str(c) for c in range(C)])
    ax.set_xlabel("frame")
    ax.set_ylabel("label")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="p(y|x)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
