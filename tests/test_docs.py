"""Every code block of README.md and docs/ runs as written.

* ```python blocks run, each in a fresh interpreter, in a working folder laid out as the docs
  assume after their setup steps: ``data/``, ``recipes/`` and ``examples/`` of the repository,
  ``exp/data`` prepared from the shipped corpus (``recipes/librispeech/prepare.py``, units
  ``char`` and ``phone``), and small trained checkpoints at ``exp/hmm_phone/best.pt`` and
  ``exp/ctc_char/best.pt`` (a few steps of training: enough to run, not to align well);
* ```bash blocks are read command by command (continuation lines joined, comments dropped):
  an ``fsalign`` command is parsed by its click command (every option it names must exist and
  take the value given), a ``python recipes/...`` script by its own argument parser, a
  ``torchrun ... SCRIPT`` by the script's parser, ``make TARGET`` must name a Makefile target,
  and ``pip install`` lines are left alone (they install). Running the long commands (training,
  aligning a corpus) is what ``make demo`` and the end-to-end tests do; here every command a
  reader copies is checked to be one the tools accept.

Blocks in other languages (``text``, ``toml``, no tag) are not code.
"""
import argparse
import importlib.util
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "recipes").glob("*/README.md")),
        REPO / "data" / "README.md", REPO / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def _blocks(language):
    for path in DOCS:
        if not path.is_file():
            continue
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == language:
                line = text[: m.start()].count("\n") + 1
                yield pytest.param(path, m.group(2), id=f"{path.relative_to(REPO)}:{line}")


def _commands(block: str):
    """Commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
        line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            yield line


@pytest.fixture(scope="module")
def docs_folder(tmp_path_factory):
    """The working folder the python blocks run in (see the module docstring)."""
    from tests.align_fixtures import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("docs")
    for name in ("data", "recipes", "examples"):
        (root / name).symlink_to(REPO / name)
    prepare = [sys.executable, str(REPO / "recipes/librispeech/prepare.py"), "--corpus-dir", "data/LibriSpeech",
               "--alignments-dir", "data/alignments/LibriSpeech", "--parts", "train-clean-5", "dev-clean-2",
               "--output-dir", "exp/data", "--unit", "char", "phone"]
    done = subprocess.run(prepare, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, topology in (("hmm_phone", "hmm"), ("ctc_char", "ctc")):
        make_tiny_checkpoint(root / "exp" / name, topology=topology, train_steps=2, name="best.pt")
    return root


@pytest.mark.parametrize("path, code", list(_blocks("python")))
def test_python_block_runs(path, code, docs_folder):
    done = subprocess.run([sys.executable, "-c", code], cwd=docs_folder, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{path.name} block failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"


def _script_parser(script: Path) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"_doc_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "get_parser"):
        return module.get_parser()
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):  # the script's main() builds its parser and parses
        parsers.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    assert parsers, f"{script} builds no argparse parser"
    return parsers[0]


def check_command(command: str) -> None:
    """Raises AssertionError if ``command`` is not one the project's tools accept."""
    words = shlex.split(command)
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
        assert all(w in targets for w in words[1:] if not w.startswith("-") and "=" not in w), command
        return
    if words[0] in ("pip", "python3.9") or words[:3] == ["python", "-m", "pip"] or words[0] in ("cd", "export"):
        return
    if words[0] == "torchrun":  # the launcher's options, then a script or -m module with its own arguments
        if "-m" in words:
            module = words[words.index("-m") + 1]
            assert module == "fsalign.cli.main", f"no check for torchrun -m {module}: {command}"
            words = ["fsalign"] + words[words.index("-m") + 2:]
        else:
            script = next(i for i, w in enumerate(words) if w.endswith(".py"))
            words = ["python"] + words[script:]
    if words[0] == "fsalign":
        from fsalign.cli.main import main

        with main.make_context("fsalign", words[1:], resilient_parsing=False) as ctx:
            name, cmd, args = main.resolve_command(ctx, words[1:])
            try:
                cmd.make_context(name, args, parent=ctx)
            except click.BadParameter as e:  # an input a previous step of the document writes
                if "does not exist" not in str(e):
                    raise
        return
    if words[0] == "python" and words[1].endswith(".py"):
        parser = _script_parser(REPO / words[1])
        try:
            parser.parse_args(words[2:])
        except SystemExit as e:
            raise AssertionError(f"{words[1]} does not accept: {command}") from e
        return
    raise AssertionError(f"no check for this kind of command: {command}")


@pytest.mark.parametrize("path, block", list(_blocks("bash")))
def test_shell_block_commands_are_accepted(path, block):
    for command in _commands(block):
        try:
            check_command(command)
        except click.UsageError as e:
            raise AssertionError(f"{path.name}: {command}: {e}") from None


def test_command_checker_rejects_what_the_tools_reject():
    for bad in ("fsalign align --checkpoint x --cuts y --output z --no-such-option 1",
                "fsalign nosuchcommand",
                "python recipes/librispeech/train.py --topology hmm",  # --unit, --data-dir, --exp-dir missing
                "make no-such-target"):
        with pytest.raises((AssertionError, click.UsageError)):
            check_command(bad)
    check_command("python recipes/librispeech/train.py --topology hmm --unit phone --data-dir d --exp-dir e")
    check_command("make test")
