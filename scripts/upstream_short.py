"""Golden run of a clip shorter than upstream's planner minimum: text2music of 3 s through the reference's own
handler (`AceStepHandler.generate_music`, `acestep/core/generation/handler/`), on the tiny fixture turbo DiT and
text encoder, three noise draws injected as one batch.

What it pins: the silent 3 s target becomes 75 latent frames, padded with the silence latent to 128 and a latent
mask of zeros past the clip (`conditioning_target.py:110-144`), the prompt's metas say "duration: 3 seconds", and
the DiT renders all 128 frames. The handler's VAE decode is replaced by a recorder (diffusers does not load beside
the reference's pinned hub client here, and the decode is the VAE's own parity case): upstream would decode the 128
frames whole, 5.12 s, and nothing in its handler, `inference.py` or the API cuts them back to the clip."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

CAPTION, LYRICS, LANGUAGE = "A short piano sting, bright and staccato", "[Instrumental]", "unknown"
SECONDS, DRAWS, FRAMES = 3.0, 3, 128


def reference_handler(root: Path, fixtures: Path):
    """The reference's DiT handler over the fixture turbo DiT and text encoder, float32 on the CPU, its VAE decode
    replaced by a recorder of the latents it is given."""
    sys.path.insert(0, str(root))
    import torch  # noqa: F401  (before transformers, as the reference imports them)
    import transformers  # noqa: F401

    # The handler's package pulls in its LoRA manager, which imports the training stack (torchaudio, peft): none of
    # it runs in a plain text2music call.
    lora = types.ModuleType("acestep.core.generation.handler.lora_manager")
    lora.LoraManagerMixin = type("LoraManagerMixin", (), {})
    sys.modules[lora.__name__] = lora
    from acestep.handler import AceStepHandler
    from transformers import AutoModel, AutoTokenizer
    from upstream_base import reference_model

    handler = AceStepHandler()
    handler.model, handler.silence_latent = reference_model(root, fixtures, "turbo")
    handler.config = handler.model.config
    encoder = fixtures / "checkpoints" / "Qwen3-Embedding-0.6B"
    handler.text_encoder = AutoModel.from_pretrained(str(encoder)).eval()
    handler.text_tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    handler.vae = object()  # never called: the decode below stands in for it
    handler.recorded = {}

    def decode(pred_latents, progress, use_tiled_decode, time_costs):
        handler.recorded["latents"] = pred_latents.detach().cpu().numpy()
        waves = torch.zeros(pred_latents.shape[0], 2, pred_latents.shape[1] * 1920)
        return waves, pred_latents.detach().cpu(), time_costs

    handler._decode_generate_music_pred_latents = decode
    return handler


def short_cases(root: Path, fixtures: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    import torch

    handler = reference_handler(root, fixtures)
    noise = np.random.default_rng([2026, 3]).standard_normal((DRAWS, FRAMES, 64)).astype(np.float32)
    handler.model.prepare_noise = lambda context, seed: torch.from_numpy(noise)
    options = {"inference_steps": 8, "shift": 3.0, "infer_method": "ode"}  # DCW: the handler's default (on)
    result = handler.generate_music(
        captions=CAPTION,
        lyrics=LYRICS,
        vocal_language=LANGUAGE,
        audio_duration=SECONDS,
        batch_size=DRAWS,
        use_random_seed=False,
        seed=",".join(str(s) for s in range(DRAWS)),
        **options,
    )
    if not result["success"]:
        raise SystemExit(f"the reference failed the short text2music: {result['error']}")
    latents = handler.recorded["latents"]
    if latents.shape != (DRAWS, FRAMES, 64):
        raise SystemExit(f"the reference rendered {latents.shape}, not {FRAMES} frames: check its setup")
    meta = {
        "component": "short_text2music",
        "reference_entry_point": "AceStepHandler.generate_music(captions, lyrics, vocal_language, audio_duration=3, "
        "batch_size=3, inference_steps=8, shift=3) on the fixture turbo DiT, noise injected, the VAE decode recorded",
        "args": {
            "caption": CAPTION,
            "lyrics": LYRICS,
            "language": LANGUAGE,
            "duration": SECONDS,
            "reference_samples": FRAMES * 1920,  # what upstream's decode returns: the 128 frames whole
            **options,
        },
    }
    masks = result["extra_outputs"]["latent_masks"].numpy().astype(np.float32)
    tensors = {"in.noise": noise, "out.target_latents": latents, "out.latent_masks": masks}
    return {"text2music_short_3s": (meta, tensors)}
