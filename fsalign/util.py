"""Generic helpers every part of fsalign may import: unit aliases, frame masks, index checks, atomic files.

Type aliases that say what a value means (as ``lhotse.utils`` does):

* :data:`Seconds`: a time or duration in seconds;
* :data:`Pathlike`: a file system path given as ``str`` or :class:`pathlib.Path`.

Atomic output: everything fsalign writes for a user (checkpoints, alignments, TextGrids,
plots, failure lists) goes through :func:`atomic_path` or :func:`atomic_open`: the data is
written to a temporary name next to the target (``.NAME.tmpPID``, same file system) and moved
onto the target with ``os.replace`` only when the writing finished; if it raised, the
temporary file is removed. A final path therefore only ever holds a complete file.

Dimension symbols:
  B: sequences in a batch
  T: frames (the padded length)
"""
import argparse
import math
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional, Union

import numpy as np
import torch

from fsalign.errors import FsalignError

__all__ = [
    "Seconds",
    "Pathlike",
    "LongAudio",
    "valid_frame_mask",
    "check_blank",
    "check_option",
    "single_thread",
    "HelpFormatter",
    "use_fast_mkl_on_amd",
    "is_finite_number",
    "is_positive_int",
    "atomic_path",
    "check_output_path",
    "atomic_open",
    "temporary_name",
]

Seconds = float
Pathlike = Union[str, Path]


@dataclass(frozen=True)
class LongAudio:
    """When a recording is long, and how its encoder forward is cut into windows (docs/long_audio.md).

    A cut longer than ``threshold_s`` is aligned in a batch of its own, its features are computed
    in pieces, and a model that offers a windowed forward (``windowed_log_probs``) encodes it in
    windows: each keeps ``window_s`` seconds of encoder output and sees ``context_s`` more on
    either side.

    Attributes:
      threshold_s: recordings longer than this are long (> 0).
      window_s: seconds of output each window keeps (> 0).
      context_s: seconds each window sees before and after what it keeps (>= 0).
    """

    threshold_s: Seconds = 60.0
    window_s: Seconds = 30.0
    context_s: Seconds = 5.0

    def __post_init__(self):
        for name, low in (("threshold_s", 0.0), ("window_s", 0.0)):
            value = getattr(self, name)
            check_option(f"long audio {name}", value, is_finite_number(value) and value > low, "a number > 0")
        check_option("long audio context_s", self.context_s,
                     is_finite_number(self.context_s) and self.context_s >= 0, "a number >= 0")

    def is_long(self, duration_s: Seconds) -> bool:
        """Whether a recording of ``duration_s`` seconds is long."""
        return duration_s > self.threshold_s


def valid_frame_mask(lengths: torch.Tensor, num_frames: int, batch_size: Optional[int] = None) -> torch.Tensor:
    """Boolean mask of the valid (non-padding) frames.

    Args:
      lengths: Tensor of shape (B,), integer number of valid frames per sequence.
      num_frames: padded length T.
      batch_size: expected B, checked when given.

    Returns:
      Tensor of shape (B, T), dtype bool, on the device of ``lengths``.

    Raises:
      ValueError: ``lengths`` is not a 1-D integer tensor with values in [0, T].
    """
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be a 1-D integer tensor, got dtype {lengths.dtype} shape {tuple(lengths.shape)}"
        )
    if batch_size is not None and lengths.shape[0] != batch_size:
        raise ValueError(f"lengths must have {batch_size} entries (one per sequence), got {lengths.shape[0]}")
    if lengths.numel() > 0 and (int(lengths.min()) < 0 or int(lengths.max()) > num_frames):
        raise ValueError(
            f"lengths must be in [0, {num_frames}] (the padded length), got min {int(lengths.min())} "
            f"max {int(lengths.max())}"
        )
    return torch.arange(num_frames, device=lengths.device) < lengths[:, None]


def check_blank(blank: int, num_labels: int) -> int:
    """Returns the blank/silence column ``blank`` as a non-negative index (negative counts from the end).

    Raises:
      ValueError: ``blank`` is outside ``[-num_labels, num_labels)``.
    """
    if not -num_labels <= blank < num_labels:
        raise ValueError(f"blank index must be in [{-num_labels}, {num_labels}), got {blank}")
    return blank % num_labels


def is_finite_number(value) -> bool:
    """True for a real number (int, float, NumPy scalar; not a bool) that is neither NaN nor infinite."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def is_positive_int(value) -> bool:
    """True for an integer (int, NumPy integer; not a bool) >= 1."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= 1


def check_option(name: str, value, ok: bool, expected: str) -> None:
    """Raises ``FsalignError("<name> must be <expected>, got <value>")`` unless ``ok``.

    The one-line message every option check of fsalign gives (library and command line).
    """
    if not ok:
        raise FsalignError(f"{name} must be {expected}, got {value!r}")


def check_output_path(path: Pathlike, what: str = "output") -> Path:
    """Checks, before any work, that ``path`` can be created: no existing file above it, a writable folder.

    Args:
      path: a file or folder to be written (it may exist; its folders need not).
      what: how messages name it (e.g. ``"--output"``).

    Returns:
      ``path`` as a Path.

    Raises:
      FsalignError: a file where a folder of ``path`` would have to be, or a folder that cannot be written.
    """
    path = Path(path)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FsalignError(f"{what} {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FsalignError(f"{what} {path} cannot be created: the folder {parent} is not writable")
    return path


def temporary_name(path: Pathlike) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under (this process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: Pathlike) -> Iterator[Path]:
    """Yields a temporary path for a writer that takes a file name (torch.save, praatio, matplotlib).

    On success the temporary file replaces ``path``; on an exception it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextmanager
def atomic_open(path: Pathlike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` written atomically: flushed and fsynced before the rename."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def use_fast_mkl_on_amd() -> bool:
    """Lets MKL use its AVX2 kernels on AMD CPUs (``MKL_DEBUG_CPU_TYPE=5``), unless set already.

    PyTorch 1.13's wheels bundle MKL 2020.0, which runs a generic code path on
    AMD processors: small GEMMs (the BLSTM's) are 2-3x slower there. The
    variable only takes effect before MKL's first call in the process and is
    inherited by worker processes started afterwards; call this first thing in
    a script. Returns whether it set the variable.
    """
    if "MKL_DEBUG_CPU_TYPE" in os.environ:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            amd = "AuthenticAMD" in f.read(4096)
    except OSError:
        return False
    if amd:
        os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
    return amd


@contextmanager
def single_thread():
    """Runs the block with one intra-op CPU thread (restored afterwards).

    The synthetic models are tiny: extra threads only add synchronisation
    (on a busy machine PyTorch's threaded ``bmm`` takes milliseconds for 4x6
    matrices); seeds run in parallel processes instead.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """argparse help that shows every optional argument's default and keeps the description as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)
