"""Atomic file output: a final path only ever holds a complete file.

Everything fsalign writes for a user (checkpoints, alignments, TextGrids, plots, failure
lists) goes through :func:`atomic_path` or :func:`atomic_open`: the data is written to a
temporary name next to the target (``.NAME.tmpPID``, same file system) and moved onto the
target with ``os.replace`` only when the writing finished; if it raised, the temporary file
is removed.
"""
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_path", "atomic_open", "temporary_name"]


def temporary_name(path: Union[str, Path]) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under (this process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yields a temporary path for a writer that takes a file name (torch.save, praatio,
    matplotlib); on success it replaces ``path``, on an exception it is removed."""
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
def atomic_open(path: Union[str, Path], mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` written atomically: flushed and fsynced before the rename."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
