"""The Oobleck VAE: 48 kHz stereo <-> 25 Hz latents."""

from .oobleck import AutoencoderOobleck, OobleckConfig
from .windows import plan_windows

__all__ = ["AutoencoderOobleck", "OobleckConfig", "plan_windows"]
