"""Where the capctl under test is imported from, for tests that start their own interpreter.

Tests that count a process's imports start Python with ``-I -S`` (``site`` off: this
checkout's editable install makes ``site`` import re and pathlib, which would hide them), so
capctl is found only where they put it on ``sys.path``.  That is this checkout for
``./test.sh``, and the installed wheel's ``site-packages`` when ``scripts/matrix.sh dist``
runs the tests against a built wheel: whichever the running tests imported.
"""

from __future__ import annotations

from pathlib import Path

import capctl

#: The directory holding the ``capctl`` package these tests imported.
CAPCTL_PATH = str(Path(capctl.__file__).resolve().parent.parent)

#: The interpreter's arguments in a hook definition ``capctl install`` writes for the capctl
#: under test (``python -I -S -c "<sys.path set-up>; <entry>"``), which every test that runs
#: the hook as runtimes do uses.
HOOK_ARGS: tuple[str, ...] = ()


def _hook_args() -> tuple[str, ...]:
    from capctl import install

    return tuple(install.interpreter_args(install.import_paths()))


HOOK_ARGS = _hook_args()

#: The installation the shipped ``hooks/`` files are written for (hooks/README.md): the
#: prefix, and the import paths ``capctl install`` finds there (Debian 12's Python 3.11).
SHIPPED_PREFIX = "/opt/capctl/venv"
SHIPPED_PATHS = (f"{SHIPPED_PREFIX}/lib/python3.11/site-packages",)


def moved_here(value: str) -> str:
    """A shipped value with the documented installation replaced by this one: its prefix, and
    its import paths by those ``capctl install`` writes here (this checkout too, for an
    editable install, which ``site`` would have found)."""
    import sys

    from capctl import install

    return value.replace(repr(list(SHIPPED_PATHS)), repr(list(install.import_paths()))).replace(
        SHIPPED_PREFIX, sys.prefix)
