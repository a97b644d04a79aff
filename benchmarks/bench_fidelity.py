"""End-to-end agreement of bf16, q8 and q4 with float32 at full size (random weights): the fidelity table of issue 28.

    python benchmarks/bench_fidelity.py ROOT [--precisions float32,bfloat16,q8,q4] [--frames 128] [--steps 8]

ROOT holds one converted model per precision (ROOT/float32, ROOT/bfloat16, ROOT/q8, ROOT/q4: `mlx-acestep convert
SRC ROOT/q8 --dtype float32 --quantize q8`, ...). Each runs in its own process through the real pipeline after
tokenization (`ACEStep.generate_from_tokens`: text encoder, condition encoder, the turbo sampler with the
product's defaults (8 steps, shift 3, DCW on), the VAE; no planner, no post-processing) on the same token ids and
the same starting noise (drawn once in float32, cast to the model's dtype). Against the float32 run:

- latent cosine: cosine similarity of the final latents, flattened;
- waveform cosine: the same over the decoded waveform (both channels);
- LSD: log-spectral distance in dB, sqrt(mean over frequency bins of (10 log10(P_ref / P))^2) per STFT frame
  (Hann window 2048, hop 512, each channel), averaged over frames and channels; P the power spectrum plus 1e-10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from benchmarks.common import ROOT, child_env  # noqa: E402

ANCHORS = {
    "bfloat16": "a bf16 port vs the fp32 reference: end-to-end latent cosine 0.99898",
    "q8": "acestep.cpp Q8_0: DiT-x0 cosine 0.978",
    "q4": "acestep.cpp Q4_K_M: DiT-x0 cosine 0.958",
}
TEXT_TOKENS, LYRIC_TOKENS = 32, 64


def child(model: str, frames: int, steps: int, out: Path) -> None:
    import mlx.core as mx

    from mlx_acestep.conditioning.inputs import PromptTokens
    from mlx_acestep.pipeline import ACEStep

    pipe = ACEStep.from_pretrained(model, keep_loaded=False, lm=None)
    rng = np.random.default_rng(0)
    text_ids = rng.integers(0, 500, (1, TEXT_TOKENS))
    lyric_ids = rng.integers(0, 500, (1, LYRIC_TOKENS))
    tokens = PromptTokens(text_ids, np.ones_like(text_ids, bool), lyric_ids, np.ones_like(lyric_ids, bool))
    noise = mx.random.normal((1, frames, 64), key=mx.random.key(0)).astype(pipe.dtype)  # float32 draw, cast
    start = time.perf_counter()
    result = pipe.generate_from_tokens(tokens, frames, noise, pipe.sampler_settings(steps=steps))
    np.save(out / "latents.npy", np.array(result.latents.astype(mx.float32)))
    np.save(out / "waveform.npy", np.array(result.waveform.astype(mx.float32)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    run = {"seconds": time.perf_counter() - start, "dtype": str(pipe.dtype), "commit": commit.stdout.strip()}
    (out / "run.json").write_text(json.dumps(run))
    print("RESULT " + json.dumps(run), flush=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()  # benchmark-side arithmetic, not run time
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def power_spectrogram(x: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """`[frames, bins]` power of one channel `x` `[samples]`."""
    window = np.hanning(n_fft)
    count = 1 + max(0, len(x) - n_fft) // hop
    frames = np.stack([x[i * hop : i * hop + n_fft] * window for i in range(count)])
    return np.abs(np.fft.rfft(frames, axis=-1)) ** 2


def log_spectral_distance(ref: np.ndarray, x: np.ndarray) -> float:
    """dB, averaged over STFT frames and channels; `ref`, `x` `[..., samples, channels]`."""
    ref, x = ref.reshape(-1, ref.shape[-1]).astype(np.float64), x.reshape(-1, x.shape[-1]).astype(np.float64)
    per_channel = []
    for c in range(ref.shape[-1]):
        p, q = power_spectrogram(ref[:, c]) + 1e-10, power_spectrogram(x[:, c]) + 1e-10
        per_channel.append(np.mean(np.sqrt(np.mean((10 * np.log10(p / q)) ** 2, axis=-1))))
    return float(np.mean(per_channel))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--precisions", default="float32,bfloat16,q8,q4")
    p.add_argument("--frames", type=int, default=128, help="latent frames (25 a second; 128 is the reference's least)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fidelity-2core-x86.json"))
    p.add_argument("--keep", type=Path, default=None, help="keep each run's latents and waveform here")
    p.add_argument("--reuse", action="store_true", help="take the runs already in --keep instead of running them")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], args.frames, args.steps, Path(args.child[1]))
    keep = args.keep or Path(tempfile.mkdtemp(prefix="fidelity-"))
    runs = {}
    for precision in args.precisions.split(","):
        if args.reuse and (keep / precision / "run.json").exists():  # measured by an earlier call (in parallel)
            runs[precision] = json.loads((keep / precision / "run.json").read_text())
            continue
        (keep / precision).mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            __file__,
            str(args.root),
            "--frames",
            str(args.frames),
            "--steps",
            str(args.steps),
            "--child",
            str(args.root / precision),
            str(keep / precision),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=child_env("mlx"), cwd=ROOT)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{precision} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        runs[precision] = json.loads(line[7:])
        print(f"{precision}: {runs[precision]['seconds']:.0f} s", flush=True)
    if "float32" not in runs:
        return
    ref_lat, ref_wave = (np.load(keep / "float32" / f) for f in ("latents.npy", "waveform.npy"))
    rows = []
    for precision, run in runs.items():
        lat, wave = (np.load(keep / precision / f) for f in ("latents.npy", "waveform.npy"))
        rows.append(
            run
            | dict(
                precision=precision,
                frames=args.frames,
                steps=args.steps,
                latent_cosine=cosine(ref_lat, lat),
                waveform_cosine=cosine(ref_wave, wave),
                lsd_db=log_spectral_distance(ref_wave, wave),
                anchor=ANCHORS.get(precision, ""),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            )
        )
    tmp = Path(args.out).with_name(f".{Path(args.out).name}.part")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(
        "| precision | latent cosine | waveform cosine | LSD (dB) | s | commit | anchor |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['precision']} | {r['latent_cosine']:.5f} | {r['waveform_cosine']:.5f} | {r['lsd_db']:.3f} | "
            f"{r['seconds']:.0f} | {r['commit']} | {r['anchor']} |"
        )


if __name__ == "__main__":
    main()
