"""Checkpoints: atomic writes, and loading everything alignment needs.

A checkpoint is a dict saved with ``torch.save``:

* ``model_config`` (:class:`~fsalign.models.conformer.ConformerConfig` as a dict), ``model``
  (state dict);
* ``tokenizer`` (``Tokenizer.to_dict()``), ``topology`` (``{"kind": ..., "params": {...}}``),
  ``criterion`` (scales and prior mode the model was trained with), ``frame_shift_s``,
  ``subsampling``, ``corpus_prior`` (log prior of shape (C,) estimated on the training part,
  or None);
* for ``--resume``: ``optimizer``, ``scheduler``, ``rng`` (torch/python/numpy/CUDA states),
  ``running_prior``, ``epoch`` (epochs completed), ``step``, ``best_dev_loss``, ``args``,
  ``stage``.
"""
import inspect
import random
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

import numpy as np
import torch

from fsalign.corpus.tokenizers import Tokenizer
from fsalign.engine.builtin import make_topology
from fsalign.engine.topology import Topology
from fsalign.errors import FsalignError
from fsalign.models.conformer import ConformerConfig, ConformerModel
from fsalign.util import Pathlike, atomic_path

__all__ = [
    "LoadedCheckpoint", "save_checkpoint", "load_checkpoint", "read_checkpoint", "rng_state",
    "set_rng_state",
]

def save_checkpoint(state: Mapping[str, Any], path: Pathlike) -> Path:
    """Writes ``state`` to ``path`` atomically (temporary file in the same directory + ``os.replace``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def read_checkpoint(path: Pathlike) -> Dict[str, Any]:
    """The raw checkpoint dict, on CPU.

    It holds RNG states and plain Python objects, so it is read with ``weights_only=False`` where
    torch has that switch (torch >= 2.6 defaults to True): load only checkpoints you trust.
    """
    if "weights_only" in inspect.signature(torch.load).parameters:
        return torch.load(path, map_location="cpu", weights_only=False)
    return torch.load(path, map_location="cpu")


def rng_state() -> Dict[str, Any]:
    """The random states training depends on (torch CPU/CUDA, python, numpy)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restores :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LoadedCheckpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
      model: the :class:`ConformerModel` in eval mode on the requested device.
      tokenizer: the tokenizer it was trained with.
      topology: the training topology (with its loop probabilities).
      metadata: the rest: ``criterion``, ``frame_shift_s``, ``subsampling``,
        ``corpus_prior`` (Tensor of shape (C,) or None), ``epoch``, ``step``, ``args``, ...
    """

    model: ConformerModel
    tokenizer: Tokenizer
    topology: Topology
    metadata: Dict[str, Any]


def load_checkpoint(path: Pathlike, device: Union[str, torch.device] = "cpu") -> LoadedCheckpoint:
    """Loads a training checkpoint for alignment or evaluation.

    Args:
      path: ``EXP/best.pt`` or ``EXP/last.pt``.
      device: where the model goes.

    Returns:
      ``(model, tokenizer, topology, metadata)``; see :class:`LoadedCheckpoint`.

    Raises:
      FsalignError: the file is missing or is not an fsalign training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FsalignError(f"checkpoint {path} does not exist")
    try:
        state = read_checkpoint(path)
    except Exception as e:  # torch raises many kinds on a file that is not one of its own
        raise FsalignError(f"{path} is not an fsalign training checkpoint: torch cannot read it "
                           f"({type(e).__name__}: {e}); it may be truncated") from None
    if not isinstance(state, dict):
        raise FsalignError(f"{path} is not an fsalign training checkpoint: it holds a {type(state).__name__}")
    missing = [k for k in ("model_config", "model", "tokenizer", "topology") if k not in state]
    if missing:
        raise FsalignError(f"{path} is not an fsalign training checkpoint: missing {missing}")
    try:
        model = ConformerModel(ConformerConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
        tokenizer = Tokenizer.from_dict(state["tokenizer"])
        topo = state["topology"]
        topology = make_topology(topo["kind"], tokenizer.num_labels, **topo.get("params", {}))
    except FsalignError:
        raise
    except Exception as e:
        raise FsalignError(f"{path} is not a usable fsalign training checkpoint ({type(e).__name__}: {e})") from None
    model.to(device).eval()
    skip = {"model", "optimizer", "scheduler", "rng", "running_prior"}
    metadata = {k: v for k, v in state.items() if k not in skip}
    prior: Optional[torch.Tensor] = metadata.get("corpus_prior")
    if prior is not None:
        metadata["corpus_prior"] = prior.to(device)
    return LoadedCheckpoint(model, tokenizer, topology, metadata)
