"""``python -m robinherit.cli``: the command line, as the ``robinherit`` entry point runs it."""

from robinherit.cli import main

main()
