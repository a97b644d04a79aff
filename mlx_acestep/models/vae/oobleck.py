"""Oobleck VAE (diffusers `AutoencoderOobleck`) in MLX: 48 kHz stereo <-> 25 Hz latents.

Channels-last throughout (`[B, L, C]`). Weight norm is fused and convolutions
are transposed by `sanitize` at conversion, so the modules here hold plain
convolutions whose attribute names mirror diffusers' (`encoder.block.0.res_unit1.conv1`, ...).
This file is the plain formulation (the one Metal runs); on the CPU backend the
encoder and decoder hand their modules to `kernels.oobleck`, which computes the
same thing with CPU-friendly operations.
Long audio is processed in overlapping windows (`windows.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import mlx.core as mx
import mlx.nn as nn

from ... import kernels
from ...errors import AceStepError
from ...kernels import oobleck as cpu
from ...limits import VAE_CHUNK, VAE_CLEAR_EVERY, VAE_OVERLAP
from ..base import FromDict
from .windows import compiled_window, plan_windows


@dataclass
class OobleckConfig(FromDict):
    """The VAE's `config.json`; `sampling_rate` defaults to 48 kHz (the released VAE's), the rest is required."""

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "encoder_hidden_size",
        "downsampling_ratios",
        "channel_multiples",
        "decoder_channels",
        "decoder_input_channels",
        "audio_channels",
    )
    encoder_hidden_size: int = 128
    downsampling_ratios: list[int] = field(default_factory=lambda: [2, 4, 4, 6, 10])
    channel_multiples: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    decoder_channels: int = 128
    decoder_input_channels: int = 64
    audio_channels: int = 2
    sampling_rate: int = 48000

    @property
    def hop_length(self) -> int:
        return math.prod(self.downsampling_ratios)

    @property
    def latent_channels(self) -> int:
        # The encoder emits mean and scale stacked on channels.
        return self.encoder_hidden_size // 2


class Snake1d(nn.Module):
    """y = x + sin(a x)^2 / (b + 1e-9), a = exp(alpha), b = exp(beta) (diffusers stores the logs)."""

    def __init__(self, dims: int):
        super().__init__()
        self.alpha = mx.zeros((dims,))
        self.beta = mx.zeros((dims,))

    def constants(self) -> tuple[mx.array, mx.array]:
        """(a, 1 / (b + 1e-9)) in float32: exp(alpha) overflows float16 past alpha ~11, and 1 / exp(beta) below
        beta ~ -11, where sin(a x)^2 / b is still an ordinary value."""
        a = mx.exp(self.alpha.astype(mx.float32))
        inv_b = 1.0 / (mx.exp(self.beta.astype(mx.float32)) + 1e-9)
        return a, inv_b

    def __call__(self, x: mx.array) -> mx.array:
        a, inv_b = self.constants()
        return _snake(x, a, inv_b)


@mx.compile  # one fused kernel on Metal
def _snake(x, a, inv_b):
    # In float32 whatever x's dtype (fused, so no float32 copy of x is stored), rounded once at the end.
    y = x.astype(mx.float32)
    return (y + inv_b * mx.square(mx.sin(a * y))).astype(x.dtype)


class OobleckResidualUnit(nn.Module):
    def __init__(self, dims: int, dilation: int):
        super().__init__()
        self.snake1 = Snake1d(dims)
        self.conv1 = nn.Conv1d(dims, dims, kernel_size=7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake1d(dims)
        self.conv2 = nn.Conv1d(dims, dims, kernel_size=1)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.conv2(self.snake2(self.conv1(self.snake1(x))))
        crop = (x.shape[1] - y.shape[1]) // 2
        if crop > 0:  # never with these paddings; kept to mirror the reference
            x = x[:, crop:-crop]
        return x + y


class OobleckEncoderBlock(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, stride: int):
        super().__init__()
        self.res_unit1 = OobleckResidualUnit(input_dim, 1)
        self.res_unit2 = OobleckResidualUnit(input_dim, 3)
        self.res_unit3 = OobleckResidualUnit(input_dim, 9)
        self.snake1 = Snake1d(input_dim)
        self.conv1 = nn.Conv1d(
            input_dim, output_dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )

    def __call__(self, x: mx.array) -> mx.array:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class OobleckDecoderBlock(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, stride: int):
        super().__init__()
        self.snake1 = Snake1d(input_dim)
        self.conv_t1 = nn.ConvTranspose1d(
            input_dim, output_dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )
        self.res_unit1 = OobleckResidualUnit(output_dim, 1)
        self.res_unit2 = OobleckResidualUnit(output_dim, 3)
        self.res_unit3 = OobleckResidualUnit(output_dim, 9)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


class OobleckEncoder(nn.Module):
    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        h = cfg.encoder_hidden_size
        mult = [1] + list(cfg.channel_multiples)
        self.conv1 = nn.Conv1d(cfg.audio_channels, h, kernel_size=7, padding=3)
        self.block = [
            OobleckEncoderBlock(h * mult[i], h * mult[i + 1], s) for i, s in enumerate(cfg.downsampling_ratios)
        ]
        self.snake1 = Snake1d(h * mult[-1])
        self.conv2 = nn.Conv1d(h * mult[-1], h, kernel_size=3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        """Audio `[B, N, 2]`, float32 into the first convolution whatever the model dtype (its small weights
        widened), rounded to the model dtype after it: in bfloat16 that is +1.4-1.6 dB on the encoded mean
        against float32 (a peer lost cosine 0.958 to the rounded input alone)."""
        if kernels.enabled():
            return cpu.run_stack(self, x.astype(mx.float32), self.conv1.weight.dtype)
        x = self.conv1(x.astype(mx.float32)).astype(self.conv1.weight.dtype)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class OobleckDecoder(nn.Module):
    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        c = cfg.decoder_channels
        mult = [1] + list(cfg.channel_multiples)
        strides = list(reversed(cfg.downsampling_ratios))
        n = len(strides)
        self.conv1 = nn.Conv1d(cfg.decoder_input_channels, c * mult[-1], kernel_size=7, padding=3)
        self.block = [OobleckDecoderBlock(c * mult[n - i], c * mult[n - i - 1], s) for i, s in enumerate(strides)]
        self.snake1 = Snake1d(c)
        self.conv2 = nn.Conv1d(c, cfg.audio_channels, kernel_size=7, padding=3, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        if kernels.enabled():
            return cpu.run_stack(self, x)
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


# --- Weight names ------------------------------------------------------------
# diffusers stores every conv under weight norm: `weight_g` and `weight_v` (legacy `weight_norm`) or
# `parametrizations.weight.original0/1` (newer torch). The effective weight is g * v / ||v||, the norm over
# all axes but axis 0 of the stored tensor (so per *input* channel for ConvTranspose1d). Then Conv1d
# [out, in, k] -> [out, k, in] and ConvTranspose1d [in, out, k] -> [out, k, in]; Snake parameters
# [1, C, 1] -> [C]. Names are otherwise kept.

_WEIGHT_NORM = {
    ".weight_g": "g",
    ".weight_v": "v",
    ".parametrizations.weight.original0": "g",
    ".parametrizations.weight.original1": "v",
}


def _weight_norm_part(key: str) -> tuple[str, str] | None:
    for suffix, part in _WEIGHT_NORM.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def fuse_weight_norm(g: mx.array, v: mx.array) -> mx.array:
    """g * v / ||v||, the norm over every axis but the first, rounded once to float32.

    Computed in float64 on the CPU (conversion time only; Metal has no float64), so the fused weight is the
    exact one and not a float32 sum's approximation.
    """
    with mx.stream(mx.cpu):
        v64 = v.astype(mx.float64)
        norm = mx.sqrt(mx.sum(v64 * v64, axis=tuple(range(1, v.ndim)), keepdims=True))
        return (g.astype(mx.float64) * v64 / norm).astype(mx.float32)


def sanitize(weights: dict, source: str = "the VAE checkpoint") -> dict:
    """A diffusers `AutoencoderOobleck` state dict under our names and layouts; errors name the source key."""
    out, pairs = {}, {}
    for key, value in weights.items():
        wn = _weight_norm_part(key)
        if wn is not None:
            pairs.setdefault(wn[0], {})[wn[1]] = value
        elif key.endswith((".alpha", ".beta")):
            if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != 1:
                raise AceStepError(f"{source}: key '{key}' has shape {tuple(value.shape)}, expected [1, C, 1]")
            out[key] = value.reshape(-1)
        elif key.endswith(".bias"):
            out[key] = value
        else:
            raise AceStepError(f"{source}: unexpected key '{key}'")
    for prefix, parts in pairs.items():
        for part, name in (("g", "weight_g"), ("v", "weight_v")):
            if part not in parts:
                raise AceStepError(f"{source}: missing key '{prefix}.{name}' (weight-norm pair incomplete)")
        g, v = parts["g"], parts["v"]
        if v.ndim != 3 or tuple(g.shape) != (v.shape[0], 1, 1):
            raise AceStepError(
                f"{source}: key '{prefix}.weight_g' has shape {tuple(g.shape)}, expected ({v.shape[0]}, 1, 1)"
            )
        axes = (1, 2, 0) if prefix.rsplit(".", 1)[-1].startswith("conv_t") else (0, 2, 1)
        out[f"{prefix}.weight"] = fuse_weight_norm(g, v).transpose(axes)
    return out


def source_name(key: str) -> str:
    """The checkpoint tensor(s) a key of ours comes from (for error messages)."""
    if key.endswith(".weight"):
        return f"'{key[:-7]}.weight_g' / '{key[:-7]}.weight_v'"
    return f"'{key}'"


# --- The autoencoder ---------------------------------------------------------


class AutoencoderOobleck(nn.Module):
    """Latents `[B, T, 64]` <-> waveform `[B, T * hop, channels]` (channels-last)."""

    def __init__(self, cfg: OobleckConfig, with_encoder: bool = True):
        """`with_encoder=False` builds a decoder-only VAE (text2music never encodes; saves half the weights)."""
        super().__init__()
        self.config = cfg
        if with_encoder:
            self.encoder = OobleckEncoder(cfg)
        self.decoder = OobleckDecoder(cfg)

    QUANTIZE_KEEP: tuple[str, ...] = ()  # convolutions have no quantized form in MLX
    QUANTIZE_AT_LEAST_8: tuple[str, ...] = ()

    def sanitize(self, weights: dict, source: str = "the VAE checkpoint") -> dict:
        return sanitize(weights, source)

    source_name = staticmethod(source_name)

    @property
    def dtype(self) -> mx.Dtype:
        return self.decoder.conv1.weight.dtype

    # Un-chunked primitives.

    def decode(self, latents: mx.array) -> mx.array:
        """`[B, T, 64]` -> `[B, T * hop, 2]` float32, in one pass."""
        self._check_latents(latents)
        return self.decoder(latents.astype(self.dtype)).astype(mx.float32)

    def encode_moments(self, audio: mx.array) -> tuple[mx.array, mx.array]:
        """`[B, N, 2]` -> (mean, std), each `[B, N // hop, 64]` float32, in one pass."""
        if "encoder" not in self:
            raise AceStepError("this VAE was loaded decoder-only (load_component(..., parts=None) to encode audio)")
        self._check_audio(audio)
        h = self.encoder(audio).astype(mx.float32)
        mean, scale = mx.split(h, 2, axis=-1)
        return mean, nn.softplus(scale) + 1e-4

    # Chunked, memory-bounded versions (one batch item at a time).

    def iter_decode(
        self, latents: mx.array, chunk: int = VAE_CHUNK, overlap: int = VAE_OVERLAP
    ) -> Iterator[tuple[int, int, mx.array]]:
        """Yield (done, total, audio) for each decoded window; audio is `[T_core * hop, 2]` of one item, evaluated."""
        self._check_latents(latents)
        hop = self.config.hop_length
        windows = plan_windows(latents.shape[1], chunk, overlap)
        total = latents.shape[0] * len(windows)
        done, decode = 0, compiled_window(self, "decode")
        for b in range(latents.shape[0]):
            for w in windows:
                audio = decode(latents[b : b + 1, w.start : w.stop])[0]
                audio = audio[(w.core_start - w.start) * hop : (w.core_stop - w.start) * hop]
                # Evaluate per window so only one window's activations live at a time. The
                # buffer cache is kept between neighbours (the next window reuses the same sizes;
                # clearing it costs page faults) but emptied every few windows, as upstream's MLX
                # decode does, so a long song's cache cannot grow past a few windows' worth.
                mx.eval(audio)
                done += 1
                if done % VAE_CLEAR_EVERY == 0:
                    mx.clear_cache()
                yield done, total, audio

    def decode_chunked(
        self,
        latents: mx.array,
        chunk: int = VAE_CHUNK,
        overlap: int = VAE_OVERLAP,
        progress: Callable[[int, int], None] | None = None,
    ) -> mx.array:
        """Like `decode`, with peak memory bounded by `chunk` instead of the length."""
        self._check_latents(latents)
        n_windows = len(plan_windows(latents.shape[1], chunk, overlap))
        items, parts = [], []
        for done, total, audio in self.iter_decode(latents, chunk, overlap):
            parts.append(audio)
            if len(parts) == n_windows:
                items.append(mx.concatenate(parts, axis=0))
                parts = []
            if progress is not None:
                progress(done, total)
        mx.clear_cache()
        return items[0][None] if len(items) == 1 else mx.stack(items)  # no extra copy for one item

    def encode_moments_chunked(
        self,
        audio: mx.array,
        chunk: int = VAE_CHUNK,
        overlap: int = VAE_OVERLAP,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[mx.array, mx.array]:
        """Like `encode_moments`, in windows of `chunk` latent frames (256 = 10.24 s).

        Upstream encodes 30 s windows; at the real width that needs ~4 GB of
        activations, and the encoder's reach (~6 frames) needs no more than ours.
        """
        self._check_audio(audio)
        hop = self.config.hop_length
        n_samples = audio.shape[1]
        frames = n_samples // hop
        windows = plan_windows(frames, chunk, overlap)
        means, stds = [], []
        total, done, encode = audio.shape[0] * len(windows), 0, compiled_window(self, "encode_moments")
        if progress is not None:
            progress(0, total)  # a bar from the start: one window of a long source takes a while on a CPU
        for b in range(audio.shape[0]):
            item_m, item_s = [], []
            for w in windows:
                # The last window runs to the end of the audio: the samples past
                # the last whole frame still reach it through the padding.
                stop = n_samples if w.stop == frames else w.stop * hop
                m, s = encode(audio[b : b + 1, w.start * hop : stop])
                keep = slice(w.core_start - w.start, w.core_stop - w.start)
                m, s = m[0, keep], s[0, keep]
                mx.eval(m, s)
                item_m.append(m)
                item_s.append(s)
                done += 1
                if progress is not None:
                    progress(done, total)
            means.append(mx.concatenate(item_m, axis=0))
            stds.append(mx.concatenate(item_s, axis=0))
        mx.clear_cache()
        return mx.stack(means), mx.stack(stds)

    @staticmethod
    def sample(mean: mx.array, std: mx.array, noise: mx.array | None = None, key: mx.array | None = None) -> mx.array:
        """Draw from the diagonal Gaussian; pass `noise` to reproduce a reference draw."""
        if noise is None:
            noise = mx.random.normal(mean.shape, key=key)
        elif noise.shape != mean.shape:
            raise AceStepError(f"noise has shape {tuple(noise.shape)}, expected {tuple(mean.shape)}")
        return mean + std * noise

    # Input checks: a clear message instead of a shape error deep in a conv.

    def _check_latents(self, z: mx.array) -> None:
        c = self.config.decoder_input_channels
        if z.ndim != 3 or z.shape[-1] != c or z.shape[1] == 0:
            raise AceStepError(f"latents must be [batch, frames, {c}], got {tuple(z.shape)}")

    def _check_audio(self, x: mx.array) -> None:
        c, hop = self.config.audio_channels, self.config.hop_length
        if x.ndim != 3 or x.shape[-1] != c:
            raise AceStepError(f"audio must be [batch, samples, {c}], got {tuple(x.shape)}")
        if x.shape[1] < hop:
            raise AceStepError(f"audio is too short to encode: {x.shape[1]} samples, need at least {hop}")
