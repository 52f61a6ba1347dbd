"""``python -m capctl``: the same as the ``capctl`` console script."""

from capctl.cli import main

main()
