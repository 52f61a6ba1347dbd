"""``capctl-docker-hook``: what dockerd runs, as ``nvidia-container-runtime-hook``, for ``--gpus``.

dockerd (20.10 and later) registers its ``nvidia`` device driver only when an executable named
``nvidia-container-runtime-hook`` is on its ``PATH`` at start; for ``--gpus`` it sets
``NVIDIA_VISIBLE_DEVICES`` in the container's environment and adds the prestart hook
``nvidia-container-runtime-hook prestart`` with dockerd's whole environment (moby
``daemon/nvidia_linux.go``).  So this entry point:

- clears the environment before anything else (dockerd's is not capctl's configuration), and
  refuses to run when it carried variables that change what Python loads, as ``capctl hook``
  does;
- takes its configuration from the root-owned default config only (its arguments are fixed):
  ``[host] driver_root`` and ``topology``, and the hook's own settings;
- reads the container state on stdin and does exactly what ``capctl hook`` does, through the
  same plan (:func:`capctl.request.container.plan_for`), so the same request policy applies.

``capctl install --docker-hook-link DIR`` links ``nvidia-container-runtime-hook`` to its own
launcher (:func:`capctl.install.python_launcher_text`), which starts ``python -I -S`` with the
installation's paths and calls :func:`hook_entry`: no ``site``, no ``re`` from pip's console
script, no teardown.  The same imports as ``capctl hook`` (``tests/test_hook_imports.py``).
"""

from __future__ import annotations

import os
import sys

#: The environment the hook runs with once dockerd's is cleared.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Python variables that change what the interpreter loaded before this code ran (the
#: "Environment variables" section of Python's command-line documentation); harmless ones
#: such as PYTHONUNBUFFERED, which a service manager may set for dockerd, are let through.
LOADING_VARS = frozenset({
    "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONPLATLIBDIR", "PYTHONSTARTUP",
    "PYTHONINSPECT", "PYTHONEXECUTABLE", "PYTHONSAFEPATH", "PYTHONPYCACHEPREFIX",
    # A warnings filter names a category as module.Class, which imports that module.
    "PYTHONWARNINGS", "PYTHONBREAKPOINT",
})  # fmt: skip


def loading_env(environ: dict[str, str]) -> list[str]:
    """Names in ``environ`` that could have injected code into this interpreter."""
    return sorted(
        k for k in environ
        if k.startswith("LD_") or k in LOADING_VARS or k in ("GCONV_PATH", "LOCPATH", "HOSTALIASES")
    )


def main() -> None:
    environ = dict(os.environ)
    os.environ.clear()
    os.environ["PATH"] = PATH
    import gc

    # As for ``capctl hook``: a hook lives for milliseconds (``capctl/main.py``).
    gc.disable()
    from capctl.deliver import hook
    from capctl.host import DEFAULT_CONFIG, Host

    bad = loading_env(environ)
    if bad:
        sys.stderr.write(
            f"capctl: error: refusing to run with {', '.join(bad)} in dockerd's environment\n"
        )
        sys.exit(1)
    if sys.argv[1:] != ["prestart"]:
        sys.stderr.write("capctl: error: usage: nvidia-container-runtime-hook prestart\n")
        sys.exit(2)
    # No option: the hook takes [host] from the config's settings cache, as ``capctl hook``
    # does without --root/--topology (no TOML parse while the config is unchanged).
    sys.exit(hook.main(Host(config=DEFAULT_CONFIG)))


def hook_entry() -> None:
    """:func:`main`, then exit without the interpreter's teardown, as ``capctl hook`` does
    (:func:`capctl.main.exit_now`): what the launcher runs."""
    from capctl.main import exit_now

    exit_now(main)
