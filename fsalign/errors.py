"""Exceptions raised by fsalign.

Every error on user input is a ``ValueError`` subclass that says what was
expected and what arrived, naming the utterance (batch index or cut id) where
there is one. No bare ``assert`` guards user input.
"""
from typing import Optional, Sequence

__all__ = ["FsalignError", "InfeasibleAlignment"]


class FsalignError(ValueError):
    """Invalid input or state detected by fsalign."""


class InfeasibleAlignment(FsalignError):
    """An utterance has fewer frames than its transcript needs under the topology.

    Attributes:
      indices: batch indices of the offending utterances.
      frames_given: frames each of them has.
      frames_needed: frames each of them needs.
      ids: optional utterance ids (e.g. lhotse cut ids), parallel to ``indices``.
    """

    def __init__(
        self,
        indices: Sequence[int],
        frames_given: Sequence[int],
        frames_needed: Sequence[int],
        ids: Optional[Sequence[str]] = None,
    ):
        self.indices = list(indices)
        self.frames_given = list(frames_given)
        self.frames_needed = list(frames_needed)
        self.ids = list(ids) if ids is not None else None
        parts = []
        for k, (i, g, n) in enumerate(zip(self.indices, self.frames_given, self.frames_needed)):
            name = f"utterance {i}" + (f" ({self.ids[k]})" if self.ids else "")
            parts.append(f"{name}: {g} frames given, {n} needed")
        super().__init__(
            "transcript longer than the utterance allows under this topology: " + "; ".join(parts)
        )
