"""How every ``capctl`` command fails: one ``capctl: error: ...`` line on stderr, never a
traceback.  Click-free, for the click CLI (:class:`capctl.cli.CapctlGroup`) and the fast
entries (:mod:`capctl.main`) alike."""

from __future__ import annotations

import os
import sys

from capctl.errors import CapctlError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn, TypeVar

    _T = TypeVar("_T")


def fail(message: str, code: int = 1) -> NoReturn:
    """``capctl: error: MESSAGE`` on stderr and exit ``code`` (every command's failure)."""
    sys.stderr.write(f"capctl: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def guarded(run: Callable[[], _T]) -> _T:
    """``run()``, with capctl's errors as one line on stderr: :class:`CapctlError` with its
    exit status, a stray OS error with 1 (every expected one is translated where it happens;
    this is the last net, so that a user never sees a traceback), and a reader that went away
    (``capctl list | head``) silently with 141."""
    try:
        return run()
    except CapctlError as err:
        fail(str(err), err.exit_code)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        fail(f"{where}{err.strerror or err}")
    raise AssertionError("unreachable")
