"""The distributed path for real: two processes under torchrun, gloo on CPU.

* Training: ``recipes/librispeech/train.py`` under ``torchrun --nproc_per_node 2`` for one short
  epoch on a few shipped utterances, then resumed for a second. A launcher written into the test's
  folder wraps the recipe's entry point (the library is not changed) and logs, per rank, every
  training batch's cut ids (through ``StagedCriterion.__call__``), every checkpoint write
  (``save_checkpoint``) and dev evaluation, the rank's final parameters, and whether a DDP wrapper
  is still alive when the process group is destroyed (it works around the hang that causes, see
  ``test_ddp_wrapper_is_released_before_the_process_group_is_destroyed``).
* Aligning: ``fsalign align --shard env`` under torchrun (each rank a separate ``fsalign align``
  process reading ``$RANK/$WORLD_SIZE``), then ``fsalign merge``, against one unsharded run.

torch 1.13's ``torchrun --standalone`` always rendezvouses on port 29400, so two test runs at once
would meet there; the tests use the static rendezvous on a free loopback port instead
(``--master_addr 127.0.0.1 --master_port PORT``), gloo bound to the loopback interface.
"""
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lhotse import CutSet

from fsalign.corpus.prepare import main as prepare_main
from tests.align_fixtures import make_cut, make_tiny_checkpoint, shipped_utterances

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "LibriSpeech"
ALIGNMENTS = REPO / "data" / "alignments" / "LibriSpeech"
RECIPE = REPO / "recipes" / "librispeech" / "train.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
PICK = {"train-clean-5": 7, "dev-clean-2": 4}  # utterances per part, taken from the first chapter
WORLD = 2
TIMEOUT_S = 240  # per command; a run takes 5-15 s

if not TORCHRUN.is_file() or not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip(f"needs torchrun next to {sys.executable} and torch.distributed with gloo", allow_module_level=True)

LAUNCHER = """
\"\"\"Runs the recipe given as the first argument with logging wrappers (fsalign's test of DDP).\"\"\"
import json
import os
import runpy
import sys
import time
import weakref

import torch
import torch.distributed as dist

import fsalign.training.loop as loop
from fsalign.training.criterion import StagedCriterion

DDP = torch.nn.parallel.DistributedDataParallel
RANK = os.environ.get("RANK", "0")
LOG_DIR = os.environ["FSALIGN_TEST_LOG_DIR"]
MODELS, WRAPPERS = [], []


def record(**event):
    with open(os.path.join(LOG_DIR, f"rank{RANK}.jsonl"), "a") as f:
        f.write(json.dumps(dict(event, pid=os.getpid())) + "\\n")


real_call, real_ddp_init = StagedCriterion.__call__, DDP.__init__
real_save, real_evaluate, real_train_steps = loop.save_checkpoint, loop.evaluate, loop.train_steps
real_destroy = dist.destroy_process_group


def logged_call(self, model, batch, epoch):
    record(event="batch", epoch=epoch, cut_ids=list(batch.cut_ids), rank=dist.get_rank(),
           world=dist.get_world_size(), backend=dist.get_backend(), ddp=isinstance(model, DDP))
    return real_call(self, model, batch, epoch)


def logged_ddp_init(self, *args, **kwargs):
    WRAPPERS.append(weakref.ref(self))
    real_ddp_init(self, *args, **kwargs)


def logged_save(state, path):
    record(event="save", path=str(path), epoch=state["epoch"], step=state["step"])
    return real_save(state, path)


def logged_evaluate(*args, **kwargs):
    record(event="evaluate")
    return real_evaluate(*args, **kwargs)


def logged_train_steps(model, *args, **kwargs):
    MODELS[:] = [getattr(model, "module", model)]
    return real_train_steps(model, *args, **kwargs)


def logged_destroy(*args, **kwargs):
    record(event="destroy", ddp_alive=sum(ref() is not None for ref in WRAPPERS))
    return real_destroy(*args, **kwargs)


StagedCriterion.__call__, DDP.__init__ = logged_call, logged_ddp_init
loop.save_checkpoint, loop.evaluate, loop.train_steps = logged_save, logged_evaluate, logged_train_steps
dist.destroy_process_group = logged_destroy
recipe = sys.argv.pop(1)
sys.argv[0] = recipe
runpy.run_path(recipe, run_name="not_main")["main"]()
if MODELS:  # the parameters this rank trained (rank 0 reloads best.pt into its model at the end)
    params = {k: v.detach() for k, v in MODELS[0].named_parameters()}
    torch.save(params, os.path.join(LOG_DIR, f"params_rank{RANK}.pt"))
record(event="done")
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    path = [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(path), **extra)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only, whatever the host name resolves to
    return env


def _run(cmd, cwd: Path, **env: str) -> str:
    """Runs ``cmd`` in a session of its own (torchrun's workers included), killed whole on timeout; its output."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {TIMEOUT_S} s:\n{output[-6000:]}")
    assert proc.returncode == 0, output[-6000:]
    return output


def _torchrun(*args) -> list:
    return [TORCHRUN, "--nnodes", "1", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "--max_restarts", "0", *args]


def _events(log_dir: Path, rank: int, kind: str) -> list:
    path = log_dir / f"rank{rank}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [e for e in events if e["event"] == kind]


def _original(cut_id: str) -> str:
    """The id of the cut a lhotse ``<id>_dup<k>`` repeat copies (the id itself if it is none)."""
    return re.sub(r"(_dup\d+)+$", "", cut_id)


# ----------------------------------------------------------------------------- training


def _copy_subset(root: Path) -> None:
    for part, count in PICK.items():
        trans = sorted((SHIPPED / part).glob("*/*/*.trans.txt"))[0]
        chapter = trans.parent.relative_to(SHIPPED / part)
        lines = trans.read_text().splitlines()[:count]
        ids = {line.split()[0] for line in lines}
        dst = root / "LibriSpeech" / part / chapter
        dst.mkdir(parents=True)
        (dst / trans.name).write_text("\n".join(lines) + "\n")
        for utt in ids:
            shutil.copy(trans.parent / f"{utt}.flac", dst / f"{utt}.flac")
        ali_src = next((ALIGNMENTS / part / chapter).glob("*.alignment.txt"))
        ali_dst = root / "alignments" / "LibriSpeech" / part / chapter
        ali_dst.mkdir(parents=True)
        kept = [ln for ln in ali_src.read_text().splitlines() if ln.split()[0] in ids]
        (ali_dst / ali_src.name).write_text("\n".join(kept) + "\n")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """One epoch under torchrun, then ``--epochs 2 --resume``: (data dir, exp dir, log dir per run)."""
    root = tmp_path_factory.mktemp("ddp")
    _copy_subset(root)
    prepare_main([
        "--corpus-dir", str(root / "LibriSpeech"), "--alignments-dir", str(root / "alignments" / "LibriSpeech"),
        "--parts", *PICK, "--output-dir", str(root / "data"), "--unit", "char",
    ])  # fmt: skip
    launcher = root / "launch_train.py"
    launcher.write_text(LAUNCHER)
    exp = root / "exp"
    args = ["--unit", "char", "--data-dir", root / "data", "--exp-dir", exp, "--preset", "tiny",
            "--max-duration", "5", "--topology", "ctc", "--no-progress", "--device", "cpu"]
    logs = {}
    for name, extra in (("first", ["--epochs", "1"]), ("resumed", ["--epochs", "2", "--resume"])):
        logs[name] = root / f"logs_{name}"
        logs[name].mkdir()
        output = _run(_torchrun(launcher, RECIPE, *args, *extra), root, FSALIGN_TEST_LOG_DIR=str(logs[name]))
        (logs[name] / "output.txt").write_text(output)
        if name == "first":  # what the resumed run will overwrite
            shutil.copy(exp / "last.pt", logs[name] / "last.pt")
    return root / "data", exp, logs


def test_ddp_ranks_train_disjoint_shards_that_cover_the_training_cuts(ddp_runs):
    """Each rank trains under DDP/gloo on its own shard. lhotse (drop_last=False) pads the last
    step with copies ``<id>_dup<k>`` so every rank takes as many steps: those count as repeats of
    the original cut, not as cuts of their own. Here no two of the 7 cuts fit in 5 s: 7 one-cut
    batches, 4 steps per rank, the last of one rank a copy."""
    data, _, logs = ddp_runs
    train_ids = [c.id for c in CutSet.from_file(data / "cuts_train-clean-5.jsonl.gz")]
    assert len(train_ids) == PICK["train-clean-5"] == len(set(train_ids))
    for name, epoch in (("first", 0), ("resumed", 1)):
        seen = {}
        for rank in range(WORLD):
            batches = _events(logs[name], rank, "batch")
            assert batches, f"rank {rank} trained on nothing ({name} run)"
            assert all((b["rank"], b["world"], b["backend"], b["ddp"]) == (rank, WORLD, "gloo", True)
                       for b in batches)
            assert {b["epoch"] for b in batches} == {epoch}  # the resumed run starts at epoch index 1
            seen[rank] = [i for b in batches for i in b["cut_ids"]]
            assert _events(logs[name], rank, "done")
            assert len(batches) == math.ceil(len(train_ids) / WORLD)  # as many steps on each rank
        originals = {r: [i for i in ids if _original(i) == i] for r, ids in seen.items()}
        assert not set(originals[0]) & set(originals[1]), originals
        assert sorted(originals[0] + originals[1]) == sorted(train_ids)  # each cut once, no cut left out
        copies = [i for ids in seen.values() for i in ids if _original(i) != i]
        assert len(copies) == WORLD * math.ceil(len(train_ids) / WORLD) - len(train_ids) == 1
        assert {_original(i) for i in copies} <= set(train_ids)


def test_only_rank_zero_writes_checkpoints_and_evaluates(ddp_runs):
    _, exp, logs = ddp_runs
    assert sorted(p.name for p in exp.iterdir()) == ["best.pt", "eval.json", "last.pt", "tensorboard"]
    assert not list(exp.glob("*.tmp*")) and not list(exp.glob(".*"))
    # one tensorboard writer per run, rank 0's (tensorboard names the file ...tfevents.<time>.<host>.<pid>.<n>)
    writers = sorted(int(p.name.split(".")[-2]) for p in (exp / "tensorboard").glob("events.out.tfevents.*"))
    assert writers == sorted(_events(logs[name], 0, "done")[0]["pid"] for name in logs)
    for name, epochs in (("first", [1]), ("resumed", [2])):
        assert _events(logs[name], 1, "save") == [] and _events(logs[name], 1, "evaluate") == []
        saves = _events(logs[name], 0, "save")
        # per epoch last.pt (and best.pt on improvement), then the corpus prior into each at the end
        assert {Path(s["path"]).parent for s in saves} == {exp}
        assert [s["epoch"] for s in saves if Path(s["path"]).name == "last.pt"] == epochs + epochs[-1:]
        assert len(_events(logs[name], 0, "evaluate")) == len(epochs) + 1  # dev per epoch, then the final one
    first = torch.load(logs["first"] / "last.pt", map_location="cpu")
    assert first["epoch"] == 1 and first["args"]["epochs"] == 1 and not first["args"]["resume"]
    assert first["args"]["exp_dir"] == str(exp) and first["corpus_prior"] is not None


def test_ddp_keeps_the_replicas_identical(ddp_runs):
    """Rank 1 ends with the parameters rank 0 saved: the gradients were averaged across the ranks (and
    after --resume rank 1 restored the optimizer state too, else its AdamW steps would differ).
    (Not the BatchNorm statistics: DDP copies rank 0's buffers at the start of each forward, so after
    the last step every rank holds those of its own last batch; the checkpoint has rank 0's.)"""
    _, exp, logs = ddp_runs
    for name in ("first", "resumed"):
        saved = torch.load(logs[name] / "last.pt" if name == "first" else exp / "last.pt", map_location="cpu")
        replica = torch.load(logs[name] / "params_rank1.pt", map_location="cpu")
        assert len(replica) > 50 and set(replica) < set(saved["model"])
        assert all(torch.equal(replica[k], saved["model"][k]) for k in replica), name


def test_ddp_run_resumes_after_its_first_epoch(ddp_runs):
    _, exp, logs = ddp_runs
    first = torch.load(logs["first"] / "last.pt", map_location="cpu")
    last = torch.load(exp / "last.pt", map_location="cpu")
    steps = {name: len(_events(logs[name], 0, "batch")) for name in logs}  # rank 0's optimizer steps per run
    assert first["step"] == steps["first"]
    assert last["epoch"] == 2 and last["step"] == first["step"] + steps["resumed"]
    assert last["args"]["epochs"] == 2 and last["args"]["resume"]
    assert "resumed from" in (logs["resumed"] / "output.txt").read_text()
    assert not all(torch.equal(last["model"][k], first["model"][k]) for k in last["model"])  # it trained on
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    metrics = json.loads((exp / "eval.json").read_text())
    assert metrics["epoch"] in (1, 2) and metrics["utterances"] == PICK["dev-clean-2"]
    assert math.isfinite(metrics["loss"])


def test_ddp_wrapper_is_released_before_the_process_group_is_destroyed(ddp_runs):
    _, _, logs = ddp_runs
    for name in logs:
        for rank in range(WORLD):
            (destroy,) = _events(logs[name], rank, "destroy")
            assert destroy["ddp_alive"] == 0, (name, rank)


# ----------------------------------------------------------------------------- aligning


def test_align_shard_env_under_torchrun_merges_to_the_unsharded_output(tmp_path):
    """Two ``fsalign align --shard env`` processes under torchrun (shard i/n from $RANK/$WORLD_SIZE, written
    to part{shard}.ctm), merged, equal one unsharded run byte for byte, the failure list included."""
    utts = shipped_utterances()[:6]
    good = [make_cut(u, t, f) for u, t, f in utts[:5]]
    broken = tmp_path / "broken.flac"  # unreadable audio: overwritten after the recording was described
    broken.write_bytes(utts[5][2].read_bytes())
    unreadable = make_cut("bad-audio", utts[5][1], broken)
    broken.write_bytes(b"this is not a flac file" * 100)
    cuts = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([good[0], good[1], unreadable, good[2], good[3], good[4]]).to_file(cuts)
    ckpt = make_tiny_checkpoint(tmp_path / "model", train_steps=2)
    options = ["--checkpoint", ckpt, "--cuts", cuts, "--batch-duration", "13", "--window", "2", "--no-progress",
               "--device", "cpu"]
    full = tmp_path / "full" / "out.ctm"
    _run([sys.executable, "-m", "fsalign.cli.main", "align", *options, "--output", full], tmp_path)
    output = _run(_torchrun("-m", "fsalign.cli.main", "align", *options, "--shard", "env",
                            "--output", tmp_path / "out" / "part{shard}.ctm"), tmp_path)
    parts = [tmp_path / "out" / f"part{i}.ctm" for i in range(WORLD)]
    assert all(f"(shard {i}/{WORLD})" in output for i in range(WORLD)), output
    assert not (tmp_path / "out" / "part{shard}.ctm").exists()
    utts_of = [{line.split()[0] for line in p.read_text().splitlines()} for p in parts]
    assert all(utts_of) and not utts_of[0] & utts_of[1]  # both ranks aligned something, nothing twice
    merged = tmp_path / "merged.ctm"
    _run([sys.executable, "-m", "fsalign.cli.main", "merge", *parts, "--output", merged], tmp_path)
    assert merged.read_bytes() == full.read_bytes()
    assert utts_of[0] | utts_of[1] == {c.id for c in good}
    failed = Path(f"{full}.failed.tsv").read_bytes()
    failed_ids = [line.split(b"\t")[0] for line in failed.splitlines()]
    assert b"bad-audio" in failed_ids and not {c.id.encode() for c in good} & set(failed_ids)
    assert Path(f"{merged}.failed.tsv").read_bytes() == failed
