"""``python -m capctl.simulated DIR``: build a simulated NVIDIA host root in DIR."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from capctl.simulated import build


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m capctl.simulated DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    build(root, dev_nodes=os.geteuid() == 0)
    print(f"simulated 8-GPU A100 host written to {root} (topology: {root / 'topology.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
