"""The ``fsalign`` command line (:mod:`fsalign.cli.main`): thin click commands, one library call each."""
