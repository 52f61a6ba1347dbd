"""The handle a grant or revoke returns: roll back to the exact previous state, or keep."""

from __future__ import annotations

from capctl.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

# logging levels, so callers need not import logging to name them
INFO, WARNING, ERROR = 20, 30, 40


def log(level: int, msg: str, *args: object) -> None:
    """Log a rare event of the cgroup package (logger ``capctl.cgroup``).

    ``logging`` costs the OCI hook about 3 ms to import, and a grant that goes well logs
    nothing, so it is imported only here, when there is something to say.
    """
    import logging

    logging.getLogger("capctl.cgroup").log(level, msg, *args)


class Undo:
    """Restores one cgroup's device access to what it was before one change.

    Use as a context manager around the steps that follow a grant: an exception rolls the
    change back, a normal exit keeps it.  Or call :meth:`rollback` / :meth:`release`
    yourself.  Either ends the handle; it holds kernel resources (program file descriptors on
    cgroup v2) until then.
    """

    def __init__(
        self,
        what: str,
        rollback: Callable[[], None] | None = None,
        release: Callable[[], None] | None = None,
    ):
        self.what = what
        self._rollback = rollback
        self._release = release
        self._done = False

    @property
    def changed(self) -> bool:
        """Whether the change did anything (a no-op change has nothing to roll back)."""
        return self._rollback is not None

    def rollback(self) -> None:
        """Undo the change; raises CgroupError if the previous state cannot be restored."""
        if self._done:
            raise CgroupError(f"{self.what}: already rolled back or released")
        try:
            if self._rollback is not None:
                log(INFO, "rolling back %s", self.what)
                self._rollback()
        finally:
            self.release()

    def release(self) -> None:
        """Keep the change and free what the handle holds (idempotent)."""
        if self._done:
            return
        self._done = True
        if self._release is not None:
            self._release()

    def __enter__(self) -> Undo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and not self._done:
            self.rollback()
        else:
            self.release()

    def __repr__(self) -> str:
        return f"Undo({self.what!r}, changed={self.changed})"
