"""Golden chunk masks and source latents of repaint and lego in upstream's two chunk mask modes, from the
reference's `ConditioningMaskMixin._build_chunk_masks_and_src_latents`
(`acestep/core/generation/handler/conditioning_masks.py`), run on seeded random latents."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np

FRAMES = 40
REGIONS = ((0.0, 0.5), (0.36, 1.2))  # seconds: from the start, and inside (frames 0-12 and 8-30 at 25 Hz)


def mask_cases(root: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    import torch

    # loaded from its file: the handler package's __init__ pulls in the whole service
    path = root / "acestep" / "core" / "generation" / "handler" / "conditioning_masks.py"
    spec = importlib.util.spec_from_file_location("reference_conditioning_masks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    host = types.SimpleNamespace(device=torch.device("cpu"), sample_rate=48000)
    build = module.ConditioningMaskMixin._build_chunk_masks_and_src_latents

    rng = np.random.default_rng([2026, 7])
    source = rng.standard_normal((1, FRAMES, 64)).astype(np.float32)
    silence = rng.standard_normal((FRAMES, 64)).astype(np.float32)
    cases = {}
    for task in ("repaint", "lego"):
        for mode in ("explicit", "auto"):
            for i, (start, end) in enumerate(REGIONS):
                masks, _, is_covers, src, repaint = build(
                    host,
                    batch_size=1,
                    max_latent_length=FRAMES,
                    instructions=[""],
                    audio_code_hints=[None],
                    target_wavs=torch.ones(1, 2, 48000),  # any non-silent source
                    target_latents=torch.from_numpy(source),
                    repainting_start=[start],
                    repainting_end=[end],
                    silence_latent_tiled=torch.from_numpy(silence),
                    chunk_mask_modes=[mode],
                    task_type=task,
                )
                meta = {
                    "component": "chunk_masks",
                    "reference_entry_point": "ConditioningMaskMixin._build_chunk_masks_and_src_latents(..., "
                    "chunk_mask_modes=[mode], task_type)",
                    "args": {"task": task, "chunk_mask_mode": mode, "repaint_start": start, "repaint_end": end},
                }
                tensors = {
                    "in.src_latents": source,
                    "in.silence_latent": silence,
                    "out.chunk_masks": masks.to(torch.float32).numpy(),  # as the DiT takes them (`.to(dtype)`)
                    "out.src_latents": src.numpy(),
                    "out.repaint_mask": repaint.to(torch.float32).numpy(),
                    "out.is_covers": is_covers.to(torch.float32).numpy(),
                }
                cases[f"chunk_mask_{task}_{mode}_{i}"] = (meta, tensors)
    return cases
