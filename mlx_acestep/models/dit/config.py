"""The DiT checkpoint's `config.json` (class AceStepConfig, spec 1.3), and which model family it is."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar

from ..base import FromDict

FAMILIES = ("turbo", "base", "sft")


@dataclass
class AceStepConfig(FromDict):
    """The DiT checkpoint's `config.json`; unknown keys are ignored.

    The fields in REQUIRED must be in the file (every released config has them). The others default to
    the released 2B models' values, documented here: `use_sliding_window` True (diffusers' configs drop
    it: sliding then follows `layer_types`), `timbre_fix_frame` 750 (30 s), the FSQ and pooler fields as
    the 2B checkpoints (shapes are checked when loading, so a wrong default cannot load silently),
    `is_turbo` False and `model_version` None (see `model_family`), the `encoder_*` widths None (= the
    DiT's, as on 2B).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "rope_theta",
        "sliding_window",
        "layer_types",
        "in_channels",
        "audio_acoustic_hidden_dim",
        "patch_size",
        "text_hidden_dim",
        "timbre_hidden_dim",
        "num_lyric_encoder_hidden_layers",
        "num_timbre_encoder_hidden_layers",
    )

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    use_sliding_window: bool = True
    sliding_window: int = 128
    layer_types: list[str] = field(default_factory=list)
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    timbre_fix_frame: int = 750  # the timbre window in latent frames (30 s)
    in_channels: int = 192  # src/hint latents | chunk mask | noisy latents
    audio_acoustic_hidden_dim: int = 64
    patch_size: int = 2
    pool_window_size: int = 5
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    num_attention_pooler_hidden_layers: int = 2
    is_turbo: bool = False
    is_lego_sft: bool = False  # upstream's SFT-stems lego checkpoint: its caption is Global / Local blocks (prompts.py)
    model_version: str | None = None  # "turbo", "base", "sft" where the config says
    # XL checkpoints give the condition encoder its own widths; 2B ones leave them out.
    encoder_hidden_size: int | None = None
    encoder_intermediate_size: int | None = None
    encoder_num_attention_heads: int | None = None
    encoder_num_key_value_heads: int | None = None

    @property
    def is_xl(self) -> bool:
        return self.encoder_hidden_size is not None

    def is_sliding(self, i: int) -> bool:
        """Each stack indexes the one `layer_types` list by its own layer index."""
        kind = (
            self.layer_types[i]
            if i < len(self.layer_types)
            else ("sliding_attention" if i % 2 == 0 else "full_attention")
        )
        return self.use_sliding_window and kind == "sliding_attention"

    def encoder_widths(self) -> dict:
        return dict(
            hidden=self.encoder_hidden_size or self.hidden_size,
            intermediate=self.encoder_intermediate_size or self.intermediate_size,
            heads=self.encoder_num_attention_heads or self.num_attention_heads,
            kv_heads=self.encoder_num_key_value_heads or self.num_key_value_heads,
        )


def model_family(config: AceStepConfig, folder_name: str = "") -> str:
    """turbo, base or sft, from the config: `is_turbo` or `model_version` (what diffusers reads too).

    Only a config that says neither falls back to the folder name (an `sft` in it), with a warning.
    """
    version = (config.model_version or "").lower()
    if config.is_turbo or version == "turbo":
        return "turbo"
    if version in FAMILIES:
        return version
    family = "sft" if "sft" in folder_name.lower() else "base"
    warnings.warn(
        f"{folder_name or 'the DiT'}: its config names no model family (is_turbo / model_version); "
        f"running it as {family}, from its folder name",
        stacklevel=2,
    )
    return family
