"""``python -m capctl``: the same as the ``capctl`` console script."""

from capctl.main import main

main()
