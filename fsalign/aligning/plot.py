"""Plots: features, score matrices and alignments of one utterance (paper Figures 1, 5, 6).

* :func:`plot_grad_scores` - the gradient-score matrix ``G`` of section 5 (Figure 1);
* :func:`plot_posteriors` - log posteriors of blank and every transcript position;
* :func:`plot_score_matrix` - the rows of a :class:`~fsalign.scores.matrix.ScoreMatrix` that its
  transcript uses (posteriors or gradient scores alike);
* :func:`plot_features` - log-mel features;
* :func:`plot_cut_alignment` - all of it for one cut, with word boundaries of the
  alignment and, optionally, of a reference (what ``fsalign plot`` draws);
* :func:`score_cut` - the score matrix and alignment of one cut from a loaded checkpoint.

Dimension symbols legend:
  S: transcript positions (padded)
  T': input feature frames (padded)
  T: frames of the posterior score matrix (T' / subsampling)
  C: score-matrix columns (blank included)
  F: feature dimension
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from fsalign.results.alignment import Alignment
from fsalign.scores.matrix import ScoreMatrix

__all__ = ["plot_grad_scores", "plot_posteriors", "plot_score_matrix", "plot_features", "draw_word_boundaries",
           "plot_cut_alignment", "CutScores", "score_cut"]

WordTimes = Sequence[Tuple[str, float, float]]  # (word, start s, end s)


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
        :func:`fsalign.scores.gradient.gradient_scores` (``G[b]``).
      num_frames: valid frames T'_b.
      num_labels: valid positions S_b.
      token_names: optional S_b names for the y axis.
      alignment: optional :class:`Alignment` from :func:`fsalign.scores.gradscore.grad_align`;
        its token spans are outlined.
      frame_shift_s: label the x axis in seconds with this frame shift (else frames).
      ax: a matplotlib Axes to draw into (default: a new figure).
      title: optional title.

    Returns:
      The matplotlib Axes.
    """
    _check_2d(G, "G must be the (S, T') matrix of one utterance")
    if not (0 < num_labels <= G.shape[0] and 0 < num_frames <= G.shape[1]):
        raise ValueError(f"num_labels/num_frames must be in 1..{tuple(G.shape)}, got {num_labels}, {num_frames}")
    if token_names is not None and len(token_names) != num_labels:
        raise ValueError(f"token_names must have {num_labels} entries, got {len(token_names)}")
    scores = G[:num_labels, :num_frames].detach().double().cpu().log_softmax(dim=1).numpy()
    ax = _axes(ax, max(4.0, num_frames / 25), max(2.0, num_labels / 4))
    step = _frames_axis(ax, frame_shift_s, "input frame")
    _show_log_scores(ax, scores, 0.0, step, "log softmax over time of G")
    if alignment is not None:
        for span in alignment.tokens:
            _outline(ax, 0.0, step, span.start, span.end, span.position, "red")
    return _label_rows(ax, token_names, "transcript position", title)


def _check_2d(x, message: str) -> None:  # ValueError(message, the shape) unless x is a 2-D tensor
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{message}, got shape {tuple(getattr(x, 'shape', ()))}")


def _axes(ax, width: float, height: float):
    """``ax``, or the Axes of a new figure of ``width`` x ``height`` inches."""
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))[1] if ax is None else ax


def _label_rows(ax, names: Optional[Sequence[str]], what: str, title: Optional[str]):
    """Names the rows (one tick per row, if ``names``), the y axis and the plot; returns ``ax``."""
    if names is not None:
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
    ax.set_ylabel(what)
    if title:
        ax.set_title(title)
    return ax


def _frames_axis(ax, frame_shift_s: Optional[float], what: str = "frame") -> float:
    ax.set_xlabel("time [s]" if frame_shift_s is not None else what)
    return frame_shift_s if frame_shift_s is not None else 1.0


def _show_log_scores(ax, image, x0: float, step: float, label: str) -> None:
    """Shows ``image`` (rows, frames) of log scores on ``ax``, with a colour bar named ``label``.

    Frame ``t`` is drawn at ``[x0 + t step, x0 + (t+1) step)``; the colour scale starts from the
    smallest finite value.
    """
    finite = image[image > float("-inf")]
    shown = ax.imshow(image, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                      vmin=float(finite.min()) if finite.size else None,
                      extent=(x0, x0 + image.shape[1] * step, -0.5, image.shape[0] - 0.5))
    ax.figure.colorbar(shown, ax=ax, label=label)


def _outline(ax, x0: float, step: float, start: int, end: int, row: int, color: str) -> None:
    """A box around frames ``[start, end)`` of image row ``row``."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x0 + start * step, row - 0.5), (end - start) * step, 1.0, fill=False, edgecolor=color,
                           linewidth=1.0))


def plot_posteriors(
    log_probs: torch.Tensor,
    num_frames: int,
    tokens: Sequence[int],
    blank: int = 0,
    token_names: Optional[Sequence[str]] = None,
    alignment: Optional[Alignment] = None,
    frame_shift_s: Optional[float] = None,
    ax=None,
    title: Optional[str] = None,
    time_offset_s: float = 0.0,
):
    """Draws the log posteriors of blank/silence and of every transcript position (Figures 5, 6).

    Row 0 is the blank/silence column, row ``s + 1`` the column of the transcript's token
    ``s`` (a token that occurs twice has two identical rows), so a path through the
    transcript runs from the bottom left to the top right.

    Args:
      log_probs: Tensor of shape (T, C) for one utterance.
      num_frames: valid frames T_b.
      tokens: the transcript's S_b token ids (score-matrix columns), flattened over words.
      blank: blank/silence column.
      token_names: optional names of all C columns (for the y axis).
      alignment: optional :class:`Alignment` (Viterbi, in these frames); its token spans
        and blank/silence frames are outlined.
      frame_shift_s: seconds per frame of ``log_probs`` (else the x axis is in frames).
      ax: a matplotlib Axes to draw into (default: a new figure).
      title: optional title.
      time_offset_s: with ``frame_shift_s``, where frame 0 starts in seconds
        (:func:`fsalign.results.alignment.frame_time_offset`; 0: at 0).

    Returns:
      The matplotlib Axes.
    """
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2:
        raise ValueError(f"log_probs must be the (T, C) matrix of one utterance, got shape "
                         f"{tuple(getattr(log_probs, 'shape', ()))}")
    if not 0 < num_frames <= log_probs.shape[0]:
        raise ValueError(f"num_frames must be in 1..{log_probs.shape[0]}, got {num_frames}")
    columns = [blank] + [int(t) for t in tokens]
    if not all(0 <= c < log_probs.shape[1] for c in columns):
        raise ValueError(f"token ids must be columns of log_probs (0..{log_probs.shape[1] - 1}), got {list(tokens)}")
    image = log_probs[:num_frames, columns].detach().double().cpu().T.numpy()  # (S_b + 1, T_b)
    names = [token_names[c] for c in columns] if token_names is not None else None
    return _draw_rows(image, alignment, blank, names, frame_shift_s, time_offset_s, "log posterior", ax, title)


def _draw_rows(image, alignment: Optional[Alignment], blank: int, row_names: Optional[Sequence[str]],
               frame_shift_s: Optional[float], time_offset_s: float, label: str, ax, title: Optional[str]):
    """Draws ``image`` (blank row, then one row per transcript position; frames on x).

    The alignment's token spans (red) and blank/silence frames (orange) are outlined.
    """
    rows, num_frames = image.shape
    ax = _axes(ax, max(4.0, num_frames / 25), max(2.0, rows / 4))
    step = _frames_axis(ax, frame_shift_s)
    x0 = time_offset_s if frame_shift_s is not None else 0.0
    _show_log_scores(ax, image, x0, step, label)
    if alignment is not None:
        for span in alignment.tokens:
            _outline(ax, x0, step, span.start, span.end, span.position + 1, "red")
        labels = alignment.labels[:num_frames].tolist()
        start = None
        for t, column in enumerate(labels + [None]):
            if column == blank and start is None:
                start = t
            elif column != blank and start is not None:
                _outline(ax, x0, step, start, t, 0, "orange")
                start = None
    return _label_rows(ax, row_names, "blank + transcript position", title)


def plot_score_matrix(matrix: ScoreMatrix, b: int = 0, alignment: Optional[Alignment] = None,
                      token_names: Optional[Sequence[str]] = None, ax=None, title: Optional[str] = None):
    """Draws the rows of one utterance's score matrix that its transcript uses (Figures 1, 5, 6).

    Row 0 is the blank/silence column, row ``s + 1`` the column of transcript position ``s``
    (posteriors: the token's column, so a repeated token has two identical rows; gradient
    scores: the position's own column); x is time in seconds (the matrix's frame step and
    offset), so posterior and gradient-score plots of one cut line up.

    Args:
      matrix: a :class:`~fsalign.scores.matrix.ScoreMatrix`.
      b: the utterance.
      alignment: optional best path of utterance ``b`` (in the matrix's frames).
      token_names: names of the token ids (a tokenizer's ``token_names``) for the y axis.
      ax: a matplotlib Axes to draw into (default: a new figure).
      title: optional title.

    Returns:
      The matplotlib Axes.
    """
    n = int(matrix.lengths[b])
    image = matrix.scores[b, :n, matrix.position_columns(b)].detach().double().cpu().T.numpy()
    names = None
    if token_names is not None:
        names = [token_names[matrix.blank] if matrix.tokens is None else token_names[0]]
        names += [token_names[t] for t in matrix.position_tokens(b)]
    return _draw_rows(image, alignment, matrix.blank, names, matrix.frame_step_s, matrix.time_offset_s,
                      matrix.name, ax, title)


def plot_features(features: torch.Tensor, frame_shift_s: Optional[float] = None, ax=None,
                  title: Optional[str] = None):
    """Draws log-mel features as an image.

    Args:
      features: Tensor of shape (T', F) for one utterance (valid frames only).
      frame_shift_s: seconds per frame (else the x axis is in frames).
      ax: a matplotlib Axes to draw into (default: a new figure).
      title: optional title.

    Returns:
      The matplotlib Axes.
    """
    _check_2d(features, "features must be a (T', F) tensor")
    ax = _axes(ax, max(4.0, features.shape[0] / 100), 2.5)
    step = _frames_axis(ax, frame_shift_s)
    image = features.detach().double().cpu().T.numpy()
    shown = ax.imshow(image, aspect="auto", origin="lower", interpolation="nearest", cmap="magma",
                      extent=(0, features.shape[0] * step, 0, features.shape[1]))
    ax.figure.colorbar(shown, ax=ax, label="log-mel")
    ax.set_ylabel("feature")
    if title:
        ax.set_title(title)
    return ax


def draw_word_boundaries(ax, words: WordTimes, color: str = "white", linestyle: str = "-",
                         labels: bool = True, label_y: float = 1.01):
    """Vertical lines at every word start and end (in the x unit of ``ax``, seconds), and the words.

    Args:
      ax: a matplotlib Axes.
      words: (word, start, end) triples.
      color: colour of the lines (and the labels).
      linestyle: matplotlib line style of the lines.
      labels: write each word at its centre, at height ``label_y`` in axes coordinates.
      label_y: 1.01 puts the words just above the axes, -0.02 just below them.
    """
    for word, start, end in words:
        for x in (start, end):
            ax.axvline(x, color=color, linestyle=linestyle, linewidth=0.9)
        if labels:
            ax.text((start + end) / 2, label_y, word, color=color, ha="center",
                    va="bottom" if label_y > 0.5 else "top", fontsize=7, rotation=30,
                    transform=ax.get_xaxis_transform())


@dataclass
class CutScores:
    """The score matrix and alignment of one cut (what :func:`score_cut` returns).

    Attributes:
      matrix: the :class:`~fsalign.scores.matrix.ScoreMatrix` of the cut (one utterance), as
        ``fsalign align`` aligns it.
      alignment: its best path, spans in frames of ``matrix``.
      words: the transcript words.
    """

    matrix: ScoreMatrix
    alignment: Alignment
    words: List[str]

    def word_times(self) -> List[Tuple[str, float, float]]:
        """(word, start s, end s) of the alignment's words."""
        return [(self.words[w.index], *self.matrix.seconds(w)) for w in self.alignment.words]


def score_cut(
    loaded,
    features: torch.Tensor,
    text: str,
    kind: str = "posterior",
    topology: Optional[str] = None,
    prior_scale: Optional[float] = None,
    blank_penalty: float = 0.0,
    p: float = 0.1,
    utt_id: str = "",
    scorer=None,
    **options,
) -> CutScores:
    """Score matrix and alignment of one utterance with a trained model.

    The scorer is :func:`fsalign.aligning.aligner.make_scorer`'s (what ``fsalign align``
    writes for the same options): ``posterior``: the model's log posteriors (blank penalty
    added, Table 14) aligned by Viterbi under the checkpoint's topology with its training
    scales (under another ``topology`` with scales 1), with ``prior_scale`` times the
    checkpoint's corpus prior; ``grad``/``gradext``: GradScore(Ext) of ``G`` (norm ``p``) at
    the input frame rate.

    Args:
      loaded: :class:`fsalign.checkpoint.LoadedCheckpoint` (the model's device is used).
      features: Tensor of shape (T', F).
      text: the transcript.
      kind: "posterior", "grad" or "gradext".
      topology: "ctc", "hmm" or "relaxed" for posterior alignment, or None (the checkpoint's).
      prior_scale: β (posterior only); None: 1 with the checkpoint's corpus prior, if any, else 0.
      blank_penalty: k added to the blank log-probability (posterior only).
      p: the p-norm of G.
      utt_id: named in errors.
      scorer: a scorer made by :func:`~fsalign.aligning.aligner.make_scorer` (then ``kind`` and the
        options are its own and the ones here are not used).
      **options: further options of :func:`~fsalign.aligning.aligner.make_scorer`.

    Raises:
      FsalignError: an option outside its range, text the tokenizer cannot encode, too few
        frames for the transcript, or scores with NaN.
    """
    from fsalign.aligning.aligner import make_scorer
    from fsalign.corpus.normalize import spoken_words
    from fsalign.errors import FsalignError

    if scorer is None:
        scorer = make_scorer(loaded, kind, topology, prior_scale, blank_penalty, grad_p=p, **options)
    words = spoken_words(text)
    transcript = loaded.tokenizer.encode(" ".join(words))
    if transcript is None:
        raise FsalignError(f"cut {utt_id}: cannot encode {text!r}: {loaded.tokenizer.find_oov(text)} out of vocabulary")
    device = next(loaded.model.parameters()).device
    feats = features.to(device=device, dtype=torch.float32)[None]
    matrix = scorer(feats, torch.tensor([feats.shape[1]], device=device), [transcript])
    if bool(matrix.has_nan()[0]):
        raise FsalignError(f"cut {utt_id}: the model's scores contain NaN")
    (alignment,) = matrix.best_paths(on_infeasible="skip")
    if alignment is None:
        raise FsalignError(f"cut {utt_id}: {int(matrix.lengths[0])} frames, the transcript needs "
                           f"{int(matrix.min_frames[0])}")
    matrix.scores = matrix.scores.detach().cpu()
    return CutScores(matrix, alignment, words)


def plot_cut_alignment(
    features: torch.Tensor,
    scores: CutScores,
    token_names: Optional[Sequence[str]] = None,
    ref_words: Optional[WordTimes] = None,
    frame_shift_s: float = 0.01,
    title: Optional[str] = None,
):
    """Features, score matrix and alignment of one cut, with word boundaries (Figures 1, 5, 6).

    Top: the features with the alignment's word boundaries (solid red, words above) and the
    reference's (dashed cyan, words below) if given. Bottom: the score matrix's rows of blank
    and the transcript positions (:func:`plot_score_matrix`) with the aligned token spans
    outlined and the reference word boundaries.

    Args:
      features: Tensor of shape (T', F).
      scores: :class:`CutScores` from :func:`score_cut`.
      token_names: names of the token ids (the tokenizer's ``token_names``).
      ref_words: reference (word, start s, end s) triples, or None.
      frame_shift_s: seconds per feature frame.
      title: figure title.

    Returns:
      The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    rows = len(scores.matrix.position_columns(0))
    fig, (ax_feat, ax_scores) = plt.subplots(
        2, 1, sharex=True, figsize=(max(6.0, features.shape[0] / 40), 3.0 + max(2.0, rows / 4)),
        gridspec_kw={"height_ratios": [1.0, max(1.0, rows / 12)]}, constrained_layout=True,
    )
    plot_features(features, frame_shift_s, ax=ax_feat)
    draw_word_boundaries(ax_feat, scores.word_times(), color="red")
    if ref_words is not None:
        draw_word_boundaries(ax_feat, ref_words, color="cyan", linestyle="--", label_y=-0.02)
    plot_score_matrix(scores.matrix, 0, scores.alignment, token_names, ax=ax_scores)
    if ref_words is not None:
        draw_word_boundaries(ax_scores, ref_words, color="cyan", linestyle="--", labels=False)
    ax_feat.set_xlabel("")
    legend = "alignment: red" + (", reference: dashed cyan" if ref_words is not None else "")
    fig.suptitle(f"{title + ' - ' if title else ''}{scores.matrix.name}; {legend}", fontsize=9)
    return fig
