#!/usr/bin/env python3
"""Golden tensors of upstream's newer sampler pieces, made by running the reference code itself.

    git -C ACE-Step-1.5 checkout 6d467e4        # upstream as mirrored by arkhaminferno/ACE-Step-1.5
    pip install "torch==2.13.0" pytorch_wavelets PyWavelets loguru "setuptools<81"
    python scripts/make_upstream_fixtures.py --reference ACE-Step-1.5 --out tests/fixtures/upstream

Writes `cases.json` and `cases/<case>.safetensors` (inputs `in.*`, outputs `out.*`) in the parity fixtures' case
format. Nothing from the reference is copied into this repository: it is imported from the checkout given.

Cases so far: DCW (`acestep/models/common/dcw_correction.py`, `DCWCorrector.apply`) in each mode, at an odd and an
even number of frames, at the default scalers and at larger ones, on seeded random latents.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REFERENCE_COMMIT = "6d467e4"
DCW_MODES = ("low", "high", "double", "pix")
DCW_SCALERS = {"default": (0.05, 0.02), "strong": (0.6, 0.4)}  # upstream's defaults, and one that shows the bands
FRAMES = (37, 40)  # odd (upstream pads one zero frame) and even


def reference_commit(root: Path) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None  # an exported tree: trust the caller


def dcw_cases(root: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    sys.path.insert(0, str(root))
    import torch
    from acestep.models.common.dcw_correction import DCWCorrector  # the reference's own code

    cases = {}
    for frames in FRAMES:
        rng = np.random.default_rng([2026, frames])
        x = rng.standard_normal((2, frames, 64)).astype(np.float32)
        denoised = (0.6 * x + 0.4 * rng.standard_normal((2, frames, 64))).astype(np.float32)
        for mode in DCW_MODES:
            for strength, (scaler, high) in DCW_SCALERS.items():
                t = float(rng.uniform(0.2, 0.95))
                corrector = DCWCorrector(enabled=True, mode=mode, scaler=scaler, high_scaler=high, wavelet="haar")
                out = corrector.apply(torch.from_numpy(x), torch.from_numpy(denoised), t).numpy()
                name = f"dcw_{mode}_{strength}_t{frames}"
                args = {"mode": mode, "scaler": scaler, "high_scaler": high, "wavelet": "haar", "t": t}
                meta = {
                    "component": "dcw",
                    "reference_entry_point": "DCWCorrector(enabled=True, ...).apply(x_next, denoised, t_curr)",
                    "args": args,
                }
                cases[name] = (meta, {"in.x_next": x, "in.denoised": denoised, "out.x": out})
    return cases


def write(out: Path, cases: dict, commit: str | None) -> None:
    from safetensors.numpy import save_file

    (out / "cases").mkdir(parents=True, exist_ok=True)
    index = {}
    for name, (meta, tensors) in sorted(cases.items()):
        save_file(tensors, str(out / "cases" / f"{name}.safetensors"))
        shapes = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "key": k} for k, v in tensors.items()}
        index[name] = {"file": f"cases/{name}.safetensors", **meta, "tensors": shapes}
    doc = {"reference": f"ace-step/ACE-Step-1.5 at {commit or REFERENCE_COMMIT}", "cases": index}
    (out / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of the reference code")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/upstream"))
    args = parser.parse_args(argv)
    if not (args.reference / "acestep" / "models" / "common" / "dcw_correction.py").is_file():
        parser.error(f"{args.reference}: not a checkout of the reference (no acestep/models/common/dcw_correction.py)")
    commit = reference_commit(args.reference)
    if commit is not None and commit != REFERENCE_COMMIT:
        parser.error(f"{args.reference} is at {commit}; check out {REFERENCE_COMMIT}")
    write(args.out, dcw_cases(args.reference), commit)
    print(f"wrote {args.out}/cases.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
