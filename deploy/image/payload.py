"""Build capctl's self-contained tree (``/opt/capctl``) from the base image's Python.

Run by the image build, with the base's ``python3``, from the build stage::

    python3 payload.py WHEELHOUSE DEST

``DEST`` gets the interpreter (``bin/python3``), its standard library (``lib/python3.X``),
capctl and its dependencies from ``WHEELHOUSE`` (no index: the build has no network), and the
entry points ``bin/capctl``, ``bin/capctl-runtime``, ``bin/capctl-docker-hook``.

Why a tree of its own and not a virtual environment: the Kubernetes init container copies
``DEST`` to the same path on the node, where the container runtime runs capctl's hook and
runtime wrapper.  CPython finds its standard library from its own executable's directory
(``lib/python3.X/os.py`` above ``bin/``), so the tree works wherever it is, without the base
image; a venv would name the base's interpreter, which the node does not have.  That needs an
interpreter that does not load ``libpython`` from the base's library directory
(:func:`loaded_libpython`): Debian's ``python3`` qualifies; a base whose interpreter does not is
refused here, at build time, rather than on the node.  On the node the tree needs the C
libraries Debian's interpreter links (glibc, zlib, expat, libffi for ctypes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

#: Standard-library parts capctl never imports: not copied (about a third of the library).
SKIP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "pydoc_data", "ensurepip",
        "site-packages", "dist-packages"}
ENTRY_POINTS = {
    "capctl": "capctl.main",
    "capctl-runtime": "capctl.runtime_main",
    "capctl-docker-hook": "capctl.docker_hook",
}


def fail(message: str) -> None:
    print(f"payload: error: {message}", file=sys.stderr)
    sys.exit(1)


def loaded_libpython() -> str:
    """The libpython this interpreter runs from, if it is a shared library ("": built in).

    Not ``Py_ENABLE_SHARED``: Debian builds a shared libpython for embedding but links its
    ``python3`` statically."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if os.path.basename(path).startswith("libpython"):
                return path
    return ""


def ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP or n.startswith("config-")}


def main(wheelhouse: str, dest: str) -> None:
    libpython = loaded_libpython()
    if libpython:
        fail(f"{sys.executable} loads {libpython}: not relocatable to the node; use a base "
             "with Debian's python3")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = sysconfig.get_path("stdlib")
    dynload = os.path.join(sysconfig.get_path("platstdlib"), "lib-dynload")
    os.makedirs(os.path.join(dest, "bin"))
    python = os.path.join(dest, "bin", "python3")
    shutil.copy2(os.path.realpath(sys.executable), python)
    lib = os.path.join(dest, "lib", version)
    shutil.copytree(stdlib, lib, ignore=ignore, symlinks=False)
    if not os.path.isdir(os.path.join(lib, "lib-dynload")):
        shutil.copytree(dynload, os.path.join(lib, "lib-dynload"))
    # Where the relocated interpreter looks for packages (Debian: local/lib/.../dist-packages).
    purelib = subprocess.run(
        [python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip()
    if not purelib.startswith(dest + "/"):
        fail(f"the copied interpreter looks for packages in {purelib}, not under {dest}")
    with tempfile.TemporaryDirectory() as tmp:
        # pip from the standard library's bundled wheel: the base needs no pip of its own.
        subprocess.run([sys.executable, "-m", "venv", os.path.join(tmp, "venv")], check=True)
        subprocess.run(
            [os.path.join(tmp, "venv", "bin", "python"), "-m", "pip", "install", "--quiet",
             "--no-index", "--find-links", wheelhouse, "--no-compile", "--target", purelib,
             "capctl"], check=True)
    shutil.rmtree(os.path.join(purelib, "bin"), ignore_errors=True)  # pip's, naming the venv
    for name, module in ENTRY_POINTS.items():
        path = os.path.join(dest, "bin", name)
        with open(path, "w") as f:
            f.write(f"#!{python} -I\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        os.chmod(path, 0o755)
    subprocess.run([python, "-I", "-m", "compileall", "-q", dest], check=True)
    check = subprocess.run([os.path.join(dest, "bin", "capctl"), "--version"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"the built tree does not run: {check.stderr.strip()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("usage: python3 payload.py WHEELHOUSE DEST")
    main(sys.argv[1], sys.argv[2])
