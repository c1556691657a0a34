"""The `fsalign` command group."""
import json

from click.testing import CliRunner

from fsalign.cli.main import main


def test_help_lists_commands_and_exits_zero():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "synth" in result.output


def test_unknown_command_exits_non_zero():
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code != 0


def test_synth_perfect_init_without_training_aligns_exactly(tmp_path):
    """Perfect initialisation (appendix A.5) gives LER 0 and TSE 0 with no training steps."""
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        main, ["synth", "--init", "perfect", "--steps", "0", "--seeds", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    metrics = data["rows"][0]["metrics"] if "rows" in data else data["metrics"]
    assert metrics["ler"][0] == 0.0 and metrics["tse"][0] == 0.0
