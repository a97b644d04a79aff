#!/usr/bin/env python3
"""Write a tiny random-weight ACE-Step 1.5 checkpoint root (original upstream layout) to DST.

    python scripts/make_tiny_checkpoint.py /tmp/tiny-root --seed 0
    mlx-acestep convert /tmp/tiny-root /tmp/tiny-mlx

DST must not exist or be an empty folder. The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlx_acestep.errors import AceStepError
from mlx_acestep.tiny import build_tiny_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dst", type=Path, help="checkpoint root to create (absent or an empty folder)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    args = parser.parse_args(argv)
    try:
        root = build_tiny_checkpoint(args.dst, seed=args.seed)
    except AceStepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        print(f"{path.stat().st_size:>10}  {path.relative_to(root)}")
    print(f"wrote tiny checkpoint root {root} (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
