"""Converting the official default set at full size: time and peak memory per component and dtype.

    python benchmarks/bench_convert.py                     # builds /tmp/acestep-full once (10 GB, random weights)
    python benchmarks/bench_convert.py --root CKPT --dtypes float32,bfloat16 --quantize none,q8

The checkpoint root is `benchmarks/full_checkpoint.py`'s: the official layout, file
names, key names, shapes and bf16 dtype of `vae/`, `Qwen3-Embedding-0.6B/`,
`acestep-v15-turbo/` and `acestep-5Hz-lm-1.7B/`, with random weights. Each row is a
fresh process running `convert_checkpoints` (the whole set, then each component
alone), so its peak resident set (VmHWM) is its own; the output folder is deleted
after each row. Times depend on the page cache: the first row reads the files cold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import ROOT, child_env, peak_rss_bytes  # noqa: E402

COMPONENTS = {
    "vae": "vae",
    "text_encoder": "Qwen3-Embedding-0.6B",
    "dit": "acestep-v15-turbo",
    "lm": "acestep-5Hz-lm-1.7B",
}


def child(root: str, dst: str, dtype: str, quantize: str, only: str) -> None:
    from mlx_acestep.convert import ConvertOptions, convert_checkpoints

    start = time.perf_counter()
    convert_checkpoints(
        root, dst, ConvertOptions(dtype=dtype, quantize=quantize), only=None if only == "all" else [COMPONENTS[only]]
    )
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in Path(dst).rglob("*") if p.is_file())
    print("RESULT " + json.dumps({"seconds": seconds, "peak_rss": peak_rss_bytes(), "bytes": size}), flush=True)


def measure(root: Path, dtype: str, quantize: str, only: str) -> dict:
    dst = Path(tempfile.mkdtemp(prefix="bench-convert-")) / "out"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_convert", "--child", str(root), str(dst), dtype, quantize, only],
            capture_output=True,
            text=True,
            env=child_env("mlx"),
            cwd=ROOT,
        )
    finally:
        shutil.rmtree(dst.parent, ignore_errors=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(line[7:])


def source_bytes(root: Path, only: str) -> int:
    folders = COMPONENTS.values() if only == "all" else [COMPONENTS[only]]
    return sum(p.stat().st_size for f in folders for p in (root / f).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        child(*argv[1:])
        return []
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/acestep-full", help="the full-size checkpoint root (built there if missing)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--quantize", default="none", help="comma list of none, q8, q4")
    p.add_argument("--components", default="all,vae,text_encoder,dit,lm")
    p.add_argument("-o", "--output", default="convert-bench.json", help="JSON rows; the markdown table goes beside it")
    args = p.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        from benchmarks.full_checkpoint import build_full_checkpoint

        build_full_checkpoint(root)
    rows = []
    for dtype in args.dtypes.split(","):
        for quantize in args.quantize.split(","):
            for only in args.components.split(","):
                print(f"converting {only} to {dtype}/{quantize} ...", flush=True)
                row = {
                    "component": only,
                    "dtype": dtype,
                    "quantize": quantize,
                    "source_bytes": source_bytes(root, only),
                    **measure(root, dtype, quantize, only),
                }
                rows.append(row)
                print(row, flush=True)
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
    lines = [
        f"Machine: {machine}",
        "",
        "| component | dtype | quantize | source (GB) | output (GB) | time (s) | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['component']} | {r['dtype']} | {r['quantize']} | | failed: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['component']} | {r['dtype']} | {r['quantize']} | {r['source_bytes'] / 1e9:.2f} | "
                f"{r['bytes'] / 1e9:.2f} | {r['seconds']:.1f} | {r['peak_rss'] / 2**30:.2f} |"
            )
    table = "\n".join(lines)
    out = Path(args.output)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
