#!/usr/bin/env python3
"""Golden tensors of upstream's newer sampler pieces, made by running the reference code itself.

    git -C ACE-Step-1.5 checkout 6d467e4        # upstream as mirrored by arkhaminferno/ACE-Step-1.5
    pip install "torch==2.13.0" pytorch_wavelets PyWavelets loguru "setuptools<81"
    python scripts/make_upstream_fixtures.py --reference ACE-Step-1.5 --out tests/fixtures/upstream

Writes `cases.json` and `cases/<case>.safetensors` (inputs `in.*`, outputs `out.*`) in the parity fixtures' case
format. Nothing from the reference is copied into this repository: it is imported from the checkout given.

Cases so far:
- DCW alone (`acestep/models/common/dcw_correction.py`, `DCWCorrector.apply`) in each mode, at an odd and an even
  number of frames, at the default scalers and at larger ones, on seeded random latents; and with each filter-bank
  wavelet upstream's UI offers (db2, db4, sym4, sym8, coif2; `pytorch_wavelets` in mode "zero");
- Heun, the velocity norm clamp and the velocity EMA (`sampler_mode`, `velocity_norm_threshold`,
  `velocity_ema_factor`), each alone and together;
- cover noise (`generate_audio`'s `cover_noise_strength`) at 0.4 and 0.75;
- turbo's variable schedule (`infer_steps` 5, 12 and 20 at shifts 2.5, 3 and 1);
- retake (`generate_audio`'s `retake_seed` / `retake_variance`) at 0.35 and 1, both noises injected;
- repaint and lego's chunk masks and source latents in both chunk mask modes (`scripts/upstream_masks.py`);
- the planner's codes-phase prompts in their current form and upstream's legacy-uncond toggle (token ids), and
  greedy codes under CFG from them (`scripts/upstream_planner.py`);
- the planner's text tasks (create a sample, format a draft, understand audio codes): their prompts and greedy answers
  on the tiny LM, some steered towards a well-formed answer, and understand from the February VAE case's latents
  through the reference's FSQ tokenizer (`scripts/upstream_planner_tasks.py`);
- the newer options on base (`scripts/upstream_base.py`): DCW, Heun (APG and ADG), the clamp, the EMA, cover noise
  and retake inside upstream's base `generate_audio`;
- flow-edit on the tiny turbo and base checkpoints, its forward noise injected (`scripts/upstream_flow_edit.py`);
- a 3 s text2music through upstream's own handler (`generate_music`): the short clip padded to 128 frames, its latent
  mask, the DiT's latents (`scripts/upstream_short.py`);
- DCW inside upstream's turbo sampler (`modeling_acestep_v15_turbo.py`, `generate_audio`) on the tiny fixture
  turbo checkpoint, from the inputs and noise of the February fixture case `turbo_generate_ode`, in each mode, at
  37 frames (theirs) and 36 (cut). The same call with DCW off is checked against that case's golden first, so a
  broken reference setup (transformers 5.x runs it without RoPE) stops here instead of writing wrong goldens.

The reference needs `transformers<4.58`, `einops` and `vector-quantize-pytorch` for the sampler cases.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from upstream_base import base_cases, check_reproduces, february_case, reference_model

REFERENCE_COMMIT = "6d467e4"
DCW_MODES = ("low", "high", "double", "pix")
DCW_SCALERS = {"default": (0.05, 0.02), "strong": (0.6, 0.4)}  # upstream's defaults, and one that shows the bands
FRAMES = (37, 40)  # odd (upstream pads one zero frame) and even
WAVELETS = ("db2", "db4", "sym4", "sym8", "coif2")  # upstream's UI's filter banks (beside haar)


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
    for wavelet in WAVELETS:  # the filter banks, both bands at once, at an odd and an even length
        for frames in FRAMES:
            rng = np.random.default_rng([2026, frames, len(wavelet)])
            x = rng.standard_normal((1, frames, 16)).astype(np.float32)
            denoised = (0.6 * x + 0.4 * rng.standard_normal((1, frames, 16))).astype(np.float32)
            t = float(rng.uniform(0.2, 0.95))
            scaler, high = DCW_SCALERS["strong"]
            corrector = DCWCorrector(enabled=True, mode="double", scaler=scaler, high_scaler=high, wavelet=wavelet)
            out = corrector.apply(torch.from_numpy(x), torch.from_numpy(denoised), t).numpy()
            args = {"mode": "double", "scaler": scaler, "high_scaler": high, "wavelet": wavelet, "t": t}
            meta = {
                "component": "dcw",
                "reference_entry_point": "DCWCorrector(enabled=True, mode='double', wavelet, ...).apply(x, denoised, t)",
                "args": args,
            }
            cases[f"dcw_{wavelet}_t{frames}"] = (meta, {"in.x_next": x, "in.denoised": denoised, "out.x": out})
    return cases


def turbo_cases(root: Path, fixtures: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    import torch

    model, silence = reference_model(root, fixtures, "turbo")
    inputs, golden = february_case(fixtures, "turbo_generate_ode")

    def run(frames: int, other=None, **options) -> np.ndarray:
        given = {
            k: torch.from_numpy(v[:, :frames] if k in ("src_latents", "chunk_masks", "noise") else v)
            for k, v in inputs.items()
        }
        noise = given.pop("noise")
        # the fixture's noise, injected; seed 1 is the retake's draw
        model.prepare_noise = lambda context, seed: noise if seed == 0 else torch.from_numpy(other)
        with torch.no_grad():
            options.setdefault("shift", 3.0)
            out = model.generate_audio(**given, silence_latent=silence, seed=0, infer_method="ode", **options)
        return out["target_latents"].numpy()

    check_reproduces(run(37, dcw_enabled=False), golden, "turbo_generate_ode")
    cases = {}
    for frames in (37, 36):
        cut = {k: v[:, :frames] if k in ("src_latents", "chunk_masks", "noise") else v for k, v in inputs.items()}
        for mode in DCW_MODES:
            scaler, high = DCW_SCALERS["strong"]  # strong enough that a misplaced correction shows
            args = {"mode": mode, "scaler": scaler, "high_scaler": high, "wavelet": "haar", "shift": 3.0}
            out = run(frames, dcw_enabled=True, dcw_mode=mode, dcw_scaler=scaler, dcw_high_scaler=high)
            meta = {
                "component": "acestep-v15-turbo:dcw",
                "reference_entry_point": "generate_audio(..., infer_method='ode', shift=3.0, dcw_enabled=True, "
                "dcw_mode, dcw_scaler, dcw_high_scaler) with the noise injected",
                "args": args,
            }
            cases[f"turbo_dcw_{mode}_t{frames}"] = (
                meta,
                {**{f"in.{k}": v for k, v in cut.items()}, "out.target_latents": out},
            )
    stabilised = {  # upstream's newer sampler options, each alone and all together
        "heun": {"sampler_mode": "heun"},
        "clamp": {"velocity_norm_threshold": 0.4},
        "ema": {"velocity_ema_factor": 0.3},
        "heun_clamp_ema": {"sampler_mode": "heun", "velocity_norm_threshold": 0.4, "velocity_ema_factor": 0.3},
        # Heun under DCW (turbo's default): which velocity the correction's clean estimate uses
        "heun_dcw": {"sampler_mode": "heun", "dcw_enabled": True, "dcw_scaler": 0.6, "dcw_high_scaler": 0.4},
    }
    for label, options in stabilised.items():
        options = {"dcw_enabled": False, **options}
        out = run(37, **options)
        meta = {
            "component": "acestep-v15-turbo:solver",
            "reference_entry_point": f"generate_audio(..., {options}), noise injected",
            "args": {"shift": 3.0, **options},
        }
        cases[f"turbo_{label}"] = (meta, {**{f"in.{k}": v for k, v in inputs.items()}, "out.target_latents": out})
    for steps, shift in ((5, 2.5), (12, 3.0), (20, 1.0)):  # upstream's variable turbo schedule (April 2026)
        out = run(37, infer_steps=steps, shift=shift, dcw_enabled=False)
        meta = {
            "component": "acestep-v15-turbo:steps",
            "reference_entry_point": "generate_audio(..., infer_steps, shift, dcw_enabled=False), noise injected",
            "args": {"steps": steps, "shift": shift},
        }
        cases[f"turbo_steps_{steps}_shift{shift:g}"] = (
            meta,
            {**{f"in.{k}": v for k, v in inputs.items()}, "out.target_latents": out},
        )
    for strength in (0.4, 0.75):  # t* = 0.642857 (step 5 of 8) and 0.3 (the last step)
        out = run(37, cover_noise_strength=strength, dcw_enabled=False)
        meta = {
            "component": "acestep-v15-turbo:cover_noise",
            "reference_entry_point": "generate_audio(..., cover_noise_strength, dcw_enabled=False), noise injected",
            "args": {"cover_noise_strength": strength, "shift": 3.0},
        }
        cases[f"turbo_cover_noise_{strength:g}"] = (
            meta,
            {**{f"in.{k}": v for k, v in inputs.items()}, "out.target_latents": out},
        )
    other = np.random.default_rng([2026, 1]).standard_normal(inputs["noise"].shape).astype(np.float32)
    for variance in (0.35, 1.0):
        out = run(37, other, retake_seed=1, retake_variance=variance, dcw_enabled=False)
        meta = {
            "component": "acestep-v15-turbo:retake",
            "reference_entry_point": "generate_audio(..., seed, retake_seed, retake_variance, dcw_enabled=False) "
            "with both noises injected",
            "args": {"retake_variance": variance, "shift": 3.0},
        }
        tensors = {**{f"in.{k}": v for k, v in inputs.items()}, "in.retake_noise": other, "out.target_latents": out}
        cases[f"turbo_retake_{variance:g}"] = (meta, tensors)
    return cases


def write(out: Path, cases: dict, commit: str | None, keep: bool = False) -> None:
    """Write the cases and their index; `keep`: the index's other cases stay (a partial remake)."""
    from safetensors.numpy import save_file

    (out / "cases").mkdir(parents=True, exist_ok=True)
    index = json.loads((out / "cases.json").read_text())["cases"] if keep else {}
    for name, (meta, tensors) in sorted(cases.items()):
        # contiguous first: safetensors writes a sliced array's underlying buffer, not its view
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(tensors, str(out / "cases" / f"{name}.safetensors"))
        shapes = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "key": k} for k, v in tensors.items()}
        index[name] = {"file": f"cases/{name}.safetensors", **meta, "tensors": shapes}
    doc = {"reference": f"ace-step/ACE-Step-1.5 at {commit or REFERENCE_COMMIT}", "cases": dict(sorted(index.items()))}
    (out / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")


def _flow_edit(root, fixtures):
    from upstream_flow_edit import flow_edit_cases

    return flow_edit_cases(root, fixtures, reference_model)


def _imported(module: str, function: str, with_fixtures: bool = True):
    def make(root, fixtures):
        make_cases = getattr(__import__(module), function)
        return make_cases(root, fixtures) if with_fixtures else make_cases(root)

    return make


GROUPS = {  # each group of cases and its maker(reference, fixtures)
    "dcw": lambda root, fixtures: dcw_cases(root),
    "turbo": turbo_cases,
    "base": base_cases,
    "masks": _imported("upstream_masks", "mask_cases", with_fixtures=False),
    "planner": _imported("upstream_planner", "planner_cases"),
    "flow_edit": _flow_edit,
    "planner_tasks": _imported("upstream_planner_tasks", "planner_task_cases"),
    "short": _imported("upstream_short", "short_cases"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of the reference code")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/upstream"))
    parser.add_argument(
        "--fixtures", type=Path, default=Path("../shared/fixtures/parity"), help="the February fixtures"
    )
    parser.add_argument("--only", choices=sorted(GROUPS), help="remake one group of cases, keeping the others")
    args = parser.parse_args(argv)
    if not (args.reference / "acestep" / "models" / "common" / "dcw_correction.py").is_file():
        parser.error(f"{args.reference}: not a checkout of the reference (no acestep/models/common/dcw_correction.py)")
    commit = reference_commit(args.reference)
    if commit is not None and commit != REFERENCE_COMMIT:
        parser.error(f"{args.reference} is at {commit}; check out {REFERENCE_COMMIT}")
    cases = {}
    for name, make in GROUPS.items():
        if args.only in (None, name):
            cases.update(make(args.reference, args.fixtures))
    write(args.out, cases, commit, keep=args.only is not None)
    print(f"wrote {args.out}/cases.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
