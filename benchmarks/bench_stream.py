"""`generate --stream` against the same run without it: peak memory, identical files, and the file growing on disk.

    python benchmarks/bench_stream.py [--model tiny] [--duration 600] [--steps 1] [--interval 0.5]

Runs the CLI twice in fresh processes (`python -m mlx_acestep.cli generate ... --no-thinking`, the same seed),
without and then with `--stream`, each into its own empty folder. While each runs, every `--interval` seconds it
samples the process's resident set (/proc/PID/status) and the sizes of the files in the output folder, hidden
ones included (`--stream` appends each decoded VAE window to a hidden raw file beside the output, then encodes
the finished song into a hidden temporary and renames it into place). Reported per run: the CLI's own peak
figures (MLX's peak and the process's resident peak, its last line), the process's max RSS (`wait4`), and for
the streamed run the hidden files' sizes over time. The two WAV files' sample data (the `data` chunk) are
compared byte for byte; the files differ only in the tags and sidecar, which record `--stream` itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, child_env  # noqa: E402

PEAK_LINE = re.compile(r"peak memory ([\d.]+) GB \(MLX arrays\), ([\d.]+) GB resident")


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wav_data(path: Path) -> bytes:
    """The bytes of a WAV file's `data` chunk: the samples, without the tags (which record `--stream` itself)."""
    raw = path.read_bytes()
    at = 12
    while at + 8 <= len(raw):
        size = int.from_bytes(raw[at + 4 : at + 8], "little")
        if raw[at : at + 4] == b"data":
            return raw[at + 8 : at + 8 + size]
        at += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def run_cli(args, folder: Path, stream: bool) -> dict:
    out = folder / "song.wav"
    cmd = [
        sys.executable,
        "-m",
        "mlx_acestep.cli",
        "generate",
        "gentle piano",
        "--model",
        args.model,
        "--duration",
        str(args.duration),
        "--seed",
        "0",
        "--steps",
        str(args.steps),
        "--no-thinking",
        "-o",
        str(out),
    ] + ["--stream"] * stream
    log = folder.parent / f"{folder.name}.log"
    start = time.perf_counter()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=child_env("mlx"), cwd=ROOT)
        samples = []
        while True:
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()} if folder.exists() else {}
            samples.append(dict(t=round(time.perf_counter() - start, 2), rss=_rss(proc.pid), files=files))
            time.sleep(args.interval)
    text = log.read_text()
    peak = PEAK_LINE.search(text)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{'--stream' if stream else 'plain'} run failed: {text.strip().splitlines()[-1:]}")
    return dict(
        stream=stream,
        command=" ".join(cmd[1:]),
        wall_s=time.perf_counter() - start,
        max_rss=usage.ru_maxrss * 1024,
        cli_mlx_peak_gb=float(peak.group(1)) if peak else None,
        cli_resident_gb=float(peak.group(2)) if peak else None,
        summary=text.strip().splitlines()[-1],
        sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
        size=out.stat().st_size,
        data_sha256=hashlib.sha256(wav_data(out)).hexdigest(),
        hidden=[
            s | dict(files={k: v for k, v in s["files"].items() if k.startswith(".")})
            for s in samples
            if any(k.startswith(".") for k in s["files"])
        ],
        samples=len(samples),
        peak_sampled_rss=max((s["rss"] for s in samples), default=0),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--steps", type=int, default=1, help="sampler steps (the stream is the VAE's: 1 keeps it short)")
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stream-2core-x86.json"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    rows = []
    for stream in (False, True):
        folder = work / ("stream" if stream else "plain")
        folder.mkdir()
        rows.append(run_cli(args, folder, stream))
        r = rows[-1]
        print(
            f"{'--stream' if stream else 'plain   '}: {r['wall_s']:.0f} s, MLX peak {r['cli_mlx_peak_gb']} GB, "
            f"CLI resident {r['cli_resident_gb']} GB, max RSS {r['max_rss'] / 1e9:.2f} GB",
            flush=True,
        )
    same = rows[0]["data_sha256"] == rows[1]["data_sha256"]
    whole = rows[0]["sha256"] == rows[1]["sha256"]
    print(
        f"identical samples (the WAV data chunks): {same}; identical files: {whole} ({rows[0]['size']} and "
        f"{rows[1]['size']} bytes: the tags record --stream)"
    )
    growth = [(s["t"], sum(s["files"].values())) for s in rows[1]["hidden"]]
    print(
        f"hidden files while streaming: {len(growth)} samples, sizes {growth[0][1] if growth else 0} -> "
        f"{growth[-1][1] if growth else 0} bytes over {growth[-1][0] - growth[0][0] if growth else 0:.1f} s"
    )
    result = dict(
        rows=rows,
        identical_samples=same,
        identical_files=whole,
        work=str(work),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
    )
    tmp = Path(args.out).with_name(f".{Path(args.out).name}.part")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
