"""The 5 Hz planner LM: prefill time and decode speed per size and precision, MLX beside transformers.

    python benchmarks/bench_lm.py                                        # 0.6B and 1.7B, all precisions
    python benchmarks/bench_lm.py --sizes 0.6B --precisions float32,q8 --no-reference
    python benchmarks/bench_lm.py --tiny                                 # a tiny config: checks that it runs

Random weights at the real shapes (no checkpoint needed), each (size, side, precision)
in a fresh process. What is timed and how: the docstring of `benchmarks/lm_runs.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks import lm_runs as lb  # noqa: E402


def _list(text: str) -> list[str]:
    return [s for s in text.split(",") if s]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", default="0.6B,1.7B", help=f"comma list of LM sizes ({', '.join(s for s in lb.SIZES if s != 'tiny')})"
    )
    p.add_argument("--precisions", default="float32,bfloat16,q8,q4", help="MLX precisions (float32, bfloat16, q8, q4)")
    p.add_argument(
        "--reference-precisions", default="float32,bfloat16", help="transformers precisions (float32, bfloat16)"
    )
    p.add_argument("--no-reference", action="store_true", help="MLX only (no torch / transformers run)")
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens per row")
    p.add_argument(
        "--slow-prompt",
        type=int,
        default=64,
        help="prompt tokens for MLX bfloat16/q8/q4 on its CPU backend, whose prefill has no fast kernel (0: use --prompt)",
    )
    p.add_argument("--warmup", type=int, default=4, help="decode steps before the first timed window")
    p.add_argument("--window", type=int, default=8, help="decode steps per timed window")
    p.add_argument("--repeats", type=int, default=3, help="timed decode windows (the best is reported)")
    p.add_argument("--prefill-repeats", type=int, default=2, help="timed prefills per batch (the best is reported)")
    p.add_argument("--tiny", action="store_true", help="a tiny config with short prompts (seconds)")
    p.add_argument(
        "-o", "--output", default="lm-bench.json", help="JSON results; the markdown table goes beside it (.md)"
    )
    args = p.parse_args(argv)
    if args.tiny:
        sizes, prompt, windows = ["tiny"], min(args.prompt, 16), dict(warmup=1, window=2, repeats=2, prefill_repeats=1)
    else:
        sizes, prompt = _list(args.sizes), args.prompt
        windows = dict(
            warmup=args.warmup, window=args.window, repeats=args.repeats, prefill_repeats=args.prefill_repeats
        )
    print(lb.machine_line(), flush=True)
    rows = lb.run_lm_benchmark(
        sizes,
        _list(args.precisions),
        reference_precisions=[] if args.no_reference else _list(args.reference_precisions),
        prompt=prompt,
        slow_prompt=args.slow_prompt or None,
        log=lambda m: print(m, flush=True),
        **windows,
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": lb.machine_line(), "rows": rows, "targets": lb.targets(rows)}, indent=1) + "\n"
    )
    table = "\n\n".join([lb.config_table(sizes), lb.markdown(rows), lb.targets_markdown(rows)])
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
