"""``python -m fsalign.cli``: the same as the ``fsalign`` command."""
from fsalign.cli.main import main

main()
