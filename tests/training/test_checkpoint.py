"""Checkpoints: atomic saving, raw round trips, load errors, and random states that reproduce draws."""
import math
import random

import numpy as np
import pytest
import torch

from fsalign.checkpoint import load_checkpoint, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from fsalign.engine.builtin import HmmTopology
from fsalign.errors import FsalignError
from fsalign.models.conformer import ConformerModel
from tests.align_fixtures import make_tiny_checkpoint


def _state():
    return {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "best_dev_loss": math.inf,
            "args": {"lr": 1e-3, "name": "exp", "dims": (4, 8)}, "corpus_prior": None, "steps": [1, 2, 3]}


def _same_state(got, expected):
    assert got.keys() == expected.keys()
    assert torch.equal(got["model"]["w"], expected["model"]["w"])
    assert {k: v for k, v in got.items() if k != "model"} == {k: v for k, v in expected.items() if k != "model"}


def test_save_then_read_round_trips_on_cpu(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "exp" / "last.pt")  # the folder is created
    assert path == tmp_path / "exp" / "last.pt"
    back = read_checkpoint(path)
    _same_state(back, _state())
    assert back["model"]["w"].device == torch.device("cpu")
    assert type(back["args"]["dims"]) is tuple
    assert [p.name for p in (tmp_path / "exp").iterdir()] == ["last.pt"]


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failing_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, failure):
    path = save_checkpoint(_state(), tmp_path / "last.pt")
    old = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        real_save({"half": "written"}, f)  # something reached the disk before the failure
        raise failure

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(failure)):
        save_checkpoint({"epoch": 4}, path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    _same_state(read_checkpoint(path), _state())
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FsalignError, match=r"checkpoint .*nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FsalignError, match="does not exist"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint file


@pytest.mark.parametrize("state, missing", [
    ({"epoch": 1}, "['model_config', 'model', 'tokenizer', 'topology']"),
    ({"model_config": {}, "model": {}, "topology": {}}, "['tokenizer']"),
])
def test_load_checkpoint_refuses_a_dict_without_the_keys(tmp_path, state, missing):
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(FsalignError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"{path} is not an fsalign training checkpoint: missing {missing}"


def _garbage(path):
    path.write_bytes(b"this is not a torch file\n" * 20)


def _truncated(path):
    torch.save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("write", [_garbage, _truncated, _empty], ids=["garbage", "truncated", "empty"])
def test_load_checkpoint_refuses_a_file_that_is_not_a_torch_file(tmp_path, write):
    path = tmp_path / "best.pt"
    write(path)
    with pytest.raises(FsalignError, match="is not an fsalign training checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("content, kind", [(torch.zeros(3), "Tensor"), ([1, 2, 3], "list"), ("model", "str")])
def test_load_checkpoint_refuses_a_torch_file_that_is_not_a_dict(tmp_path, content, kind):
    path = tmp_path / "best.pt"
    torch.save(content, path)
    with pytest.raises(FsalignError, match=f"is not an fsalign training checkpoint: it holds a {kind}"):
        load_checkpoint(path)


def test_load_checkpoint_of_the_tiny_model(tmp_path):
    path = make_tiny_checkpoint(tmp_path, topology="hmm")
    model, tokenizer, topology, metadata = load_checkpoint(path)
    assert isinstance(model, ConformerModel) and not model.training
    assert type(topology) is HmmTopology and topology.num_labels == tokenizer.num_labels == 28
    raw = read_checkpoint(path)
    assert topology.label_loop == raw["topology"]["params"]["label_loop"]
    for key in ("model", "optimizer", "scheduler", "rng", "running_prior"):
        assert key not in metadata
    assert metadata["epoch"] == 1 and metadata["subsampling"] == 4
    assert torch.equal(metadata["corpus_prior"], raw["corpus_prior"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, raw["model"][name]), name
    # without the tokenizer it is not a training checkpoint any more
    del raw["tokenizer"]
    save_checkpoint(raw, tmp_path / "broken.pt")
    with pytest.raises(FsalignError, match=r"missing \['tokenizer'\]"):
        load_checkpoint(tmp_path / "broken.pt")


def _draws():
    return torch.rand(4).tolist(), [random.random() for _ in range(4)], np.random.rand(4).tolist()


def test_rng_state_round_trip_reproduces_torch_python_and_numpy_draws():
    state = rng_state()
    assert set(state) == {"torch", "python", "numpy"} | ({"cuda"} if torch.cuda.is_available() else set())
    first = _draws()
    assert _draws() != first  # the generators move on
    set_rng_state(state)
    assert _draws() == first


def test_rng_state_survives_a_checkpoint(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    save_checkpoint({"rng": rng_state()}, tmp_path / "last.pt")
    first = _draws()
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    set_rng_state(read_checkpoint(tmp_path / "last.pt")["rng"])
    assert _draws() == first
