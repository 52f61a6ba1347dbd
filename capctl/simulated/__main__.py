"""``python -m capctl.simulated DIR``: build a simulated NVIDIA host root in DIR."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from capctl.simulated import build

USAGE = """\
usage: python -m capctl.simulated DIR

Build a simulated 8-GPU A100 host in DIR (created if missing): the driver's files under
DIR/proc, the GPU device nodes under DIR/dev when run as root, and a MIG topology snapshot
DIR/topology.json.  Then, for example: capctl --root DIR sync
"""


def main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write(USAGE)
        return 2
    root = Path(argv[0])
    build(root, dev_nodes=os.geteuid() == 0)
    print(f"simulated 8-GPU A100 host written to {root} (topology: {root / 'topology.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
