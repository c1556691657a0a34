"""The `fsalign` command line: thin click commands that import lazily and call one library function.

Commands: ``fsalign align-corpus`` (a user's corpus folder -> a model trained on it, if none is
given, and one TextGrid per audio file), ``fsalign align`` (a corpus of lhotse cuts -> CTM /
TextGrids / cuts with alignments, resumable and shardable), ``fsalign merge`` (joins the outputs
of sharded ``align`` runs), ``fsalign tse``, ``fsalign plot`` and ``fsalign synth`` (one
synthetic-laboratory configuration).
"""
import click


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or lists its help)."""

    _commands = {
        "synth": ("fsalign.cli.synth", "synth"),
        "align": ("fsalign.cli.align", "align"),
        "align-corpus": ("fsalign.cli.corpus", "align_corpus"),
        "merge": ("fsalign.cli.align", "merge"),
        "tse": ("fsalign.cli.evaluate", "tse"),
        "plot": ("fsalign.cli.evaluate", "plot"),
    }

    def list_commands(self, ctx):
        return sorted(self._commands)

    def get_command(self, ctx, name):
        if name not in self._commands:
            return None
        import importlib

        module, attr = self._commands[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="fsalign")
def main():
    """fsalign: alignment modelling for speech recognition, built on k2."""


if __name__ == "__main__":
    main()
