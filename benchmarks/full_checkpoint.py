"""A FULL-SIZE ACE-Step 1.5 checkpoint root with random weights, in the layout of `ACE-Step/Ace-Step1.5`.

    python benchmarks/full_checkpoint.py ROOT [--seed 0] [--only vae,text_encoder,dit,lm]

Conversion and loading can then be measured at the real size without downloading
anything. ROOT gets the official folders and files (spec 1.2) with the real
configs (spec 1.3-1.6) and every state-dict key and shape of spec 2.1-2.4:

    vae/                     config.json, diffusion_pytorch_model.safetensors (weight_g / weight_v, Snake [1, C, 1])
    Qwen3-Embedding-0.6B/    config.json, model.safetensors (no `model.` prefix), tokenizer files
    acestep-v15-turbo/       config.json, model.safetensors, silence_latent.pt (torch.save, float32 [1, 64, 15000])
    acestep-5Hz-lm-1.7B/     config.json, model.safetensors (`model.` prefix, tied: no lm_head),
                             generation_config.json, tokenizer files

All weights are bfloat16, as the official files (round to nearest even); only the
silence latent is float32. The layout is not restated here: the layout functions
of `mlx_acestep/tiny.py` run with a recording `_Draw` that notes each tensor's
name, shape and draw scale instead of drawing it, so the full root and the tiny
one cannot drift apart. The draw scales are tiny.py's (fan-in scaled linears and
convs, norms near 1, weight-norm gains g = gain * ||v|| with a little jitter), so
activations stay finite at real depth.

The files are too large to hold in memory (DiT 4.8 GB, LM 3.7 GB in bf16), so each
safetensors file is streamed: its header is computed from the shapes first, then
every tensor is drawn in pieces of at most CHUNK values (whole rows, so a weight-norm
`v` yields its per-row norms as it goes) on a few threads and written in order. Peak
memory stays at a few pieces, whatever the tensor size. Every piece has its own
generator (seed, component, tensor name, piece index), so the bytes depend on the
seed (and CHUNK), never on the thread count.

The TOKENIZERS ARE STAND-INS: the real Qwen3 tokenizer (151 669 ids) cannot be
downloaded here, so the text encoder gets the tiny byte-level tokenizer shipped with
the package (538 ids) and the LM the same plus 65 535 `<|audio_code_N|>` tokens (as
many as the real LM has, but at ids 538 ... 66 072 instead of 151 669 ... 217 203).
The bos / eos / pad ids in the configs are the stand-in tokenizer's. The embedding
tables still have the real row counts (151 669 and 217 204).

The root is built in a hidden folder beside ROOT and renamed into place at the end;
an existing non-empty ROOT is refused. Per component the time, size on disk and the
process's peak resident set (VmHWM, reset per component) are printed. torch is needed
for `silence_latent.pt` only (`torch.save`, as the official file).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

from benchmarks.common import peak_rss_bytes, reset_peak_rss  # noqa: E402
from mlx_acestep import (
    tiny,  # noqa: E402
    tiny_weights,
)
from mlx_acestep.errors import AceStepError  # noqa: E402

LM_DIR = "acestep-5Hz-lm-1.7B"
SILENCE_FILE = "silence_latent.pt"
NUM_AUDIO_CODES = 65535  # <|audio_code_0|> ... <|audio_code_65534|>, as the real LM's vocabulary (spec 1.6)
COMPONENTS = ("vae", "text_encoder", "dit", "lm")
CHUNK = 1 << 22  # values per drawn piece: 16 MiB of float32 while drawing, 8 MiB of bf16 written
WEIGHT_NORM_JITTER = 0.05  # as tiny.py: g = gain * ||v|| * (1 + 0.05 N(0, 1)), so a converter ignoring g goes wrong

# --- The real configs: tiny.py's schema (every field the upstream configs carry) with the real sizes.

VAE_CONFIG = {**tiny.VAE_CONFIG, "channel_multiples": [1, 2, 4, 8, 16], "decoder_channels": 128}  # spec 1.4

DIT_CONFIG = {  # spec 1.3, the 2B turbo column
    **tiny.DIT_CONFIG,
    **tiny.DIT_VARIANTS[tiny.TURBO_DIR],
    "dtype": "bfloat16",
    "fsq_dim": 2048,
    "head_dim": 128,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "num_attention_heads": 16,
    "num_audio_decoder_hidden_layers": 24,
    "num_hidden_layers": 24,
    "num_key_value_heads": 8,
    "num_lyric_encoder_hidden_layers": 8,
    "num_timbre_encoder_hidden_layers": 4,
    "sliding_window": 128,
    "text_hidden_dim": 1024,
}

_QWEN3_SIZES = {"dtype": "bfloat16", "head_dim": 128, "num_attention_heads": 16, "num_key_value_heads": 8}
TEXT_ENCODER_CONFIG = tiny._qwen3_config(  # spec 1.5: Qwen3-Embedding-0.6B
    "Qwen3Model", 28, 32768, 151669, **_QWEN3_SIZES, hidden_size=1024, intermediate_size=3072
)
LM_CONFIG = tiny._qwen3_config(  # spec 1.6: the 1.7B planner
    "Qwen3ForCausalLM", 28, 40960, 217204, **_QWEN3_SIZES, hidden_size=2048, intermediate_size=6144, pad_token_id=512
)
LM_GENERATION_CONFIG = tiny.LM_GENERATION_CONFIG


# --- What each folder holds.


@dataclass(frozen=True)
class Component:
    name: str  # the --only name
    folder: str
    configs: dict[str, dict]  # file name -> JSON
    weights: str  # the safetensors file
    layout: tuple  # tiny.py layout calls: (fn, cfg) or (fn, cfg, prefix)
    files: Callable[[], dict[str, bytes]] | None = None  # tokenizer files
    silence_channels: int | None = None  # write silence_latent.pt with this many channels


def _components(vae: dict, dit: dict, text: dict, lm: dict, lm_dir: str, n_codes: int) -> dict[str, Component]:
    return {
        "vae": Component(
            "vae",
            tiny.VAE_DIR,
            {"config.json": vae},
            "diffusion_pytorch_model.safetensors",
            ((tiny_weights.vae_encoder, vae), (tiny_weights.vae_decoder, vae)),
        ),
        "text_encoder": Component(
            "text_encoder",
            tiny.TEXT_ENCODER_DIR,
            {"config.json": text},
            "model.safetensors",
            ((tiny_weights.qwen3_tensors, text, ""),),
            tiny.text_tokenizer_files,
        ),
        "dit": Component(
            "dit",
            tiny.TURBO_DIR,
            {"config.json": dit},
            "model.safetensors",
            ((tiny_weights.dit_decoder, dit), (tiny_weights.dit_condition_side, dit)),
            silence_channels=dit["timbre_hidden_dim"],
        ),
        "lm": Component(
            "lm",
            lm_dir,
            {"config.json": lm, "generation_config.json": LM_GENERATION_CONFIG},
            "model.safetensors",
            ((tiny_weights.qwen3_tensors, lm, "model"),),
            lambda: tiny._lm_tokenizer_files(tiny.text_tokenizer_files(), n_codes),
        ),
    }


def full_components() -> dict[str, Component]:
    return _components(VAE_CONFIG, DIT_CONFIG, TEXT_ENCODER_CONFIG, LM_CONFIG, LM_DIR, NUM_AUDIO_CODES)


def tiny_components() -> dict[str, Component]:
    """The same writer on tiny.py's own configs (the turbo DiT only), for the tests."""
    return _components(
        tiny.VAE_CONFIG,
        {**tiny.DIT_CONFIG, **tiny.DIT_VARIANTS[tiny.TURBO_DIR]},
        tiny.TEXT_ENCODER_CONFIG,
        tiny.LM_CONFIG,
        tiny.LM_DIR,
        tiny.NUM_AUDIO_CODES,
    )


# --- Recording the layout.


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "normal"; "weight_v" (std = fan_in ** -0.5); "weight_g" (of the weight_v just before it)
    std: float = 1.0
    mean: float = 0.0
    gain: float = 1.0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class _Recorder(tiny_weights.Draw):
    """tiny.py's `_Draw`, noting what it would draw instead of drawing it."""

    def __init__(self):
        super().__init__(rng=None)
        self.specs: list[TensorSpec] = []

    def normal(self, name, shape, std, mean=0.0):
        self.specs.append(TensorSpec(name, tuple(int(s) for s in shape), "normal", float(std), float(mean)))

    def weight_norm_conv(self, name, shape, fan_in, gain=1.0, bias=None):
        # The legacy weight_norm pair (spec 2.3): v in the conv's shape, g [dim0, 1, 1]; v first, as tiny.py draws.
        self.specs.append(TensorSpec(f"{name}.weight_v", tuple(shape), "weight_v", fan_in**-0.5))
        self.specs.append(TensorSpec(f"{name}.weight_g", (shape[0], 1, 1), "weight_g", gain=float(gain)))
        if bias is not None:
            self.normal(f"{name}.bias", (bias,), tiny_weights.BIAS_STD)


def layout(component: Component) -> list[TensorSpec]:
    """Every tensor of the component's weight file, in tiny.py's draw order (the data order of the file)."""
    rec = _Recorder()
    for fn, *args in component.layout:
        fn(rec, *args)
    names = [s.name for s in rec.specs]
    if len(set(names)) != len(names):
        raise AceStepError(f"{component.folder}: the layout names a tensor twice")
    for i, s in enumerate(rec.specs):  # each g right after its v: it is computed from v's row norms
        if s.kind == "weight_g" and rec.specs[i - 1].name != s.name[: -len("g")] + "v":
            raise AceStepError(f"{s.name}: not preceded by its weight_v")
    return rec.specs


# --- Streaming safetensors writer.


def safetensors_header(specs: Sequence[TensorSpec], metadata: dict[str, str] | None = None) -> tuple[bytes, int]:
    """The 8-byte length + JSON header (space-padded to a multiple of 8) for BF16 tensors laid out in `specs`
    order, and the size of the data that follows."""
    entries, offset = {}, 0
    for s in specs:
        n = 2 * s.numel
        entries[s.name] = {"dtype": "BF16", "shape": list(s.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header = {"__metadata__": metadata or {"format": "pt"}, **dict(sorted(entries.items()))}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even (finite inputs); overwrites `x`."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    odd = u >> 16
    odd &= 1
    u += odd
    u += 0x7FFF
    return np.ascontiguousarray(u.view(np.uint16)[1::2] if sys.byteorder == "little" else u.view(np.uint16)[0::2])


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class _Piece:
    spec: TensorSpec
    index: int  # piece number within the tensor
    rows: int  # rows of dim 0 in this piece


def _pieces(specs: Iterable[TensorSpec]) -> Iterator[_Piece]:
    for s in specs:
        if s.kind == "weight_g":
            continue  # computed from the v pieces, not drawn
        rows, row = (s.shape[0], math.prod(s.shape[1:])) if s.shape else (1, 1)
        per = max(1, CHUNK // row)
        for index, start in enumerate(range(0, rows, per)):
            yield _Piece(s, index, min(per, rows - start))


def _draw_piece(seed: int, component: str, piece: _Piece) -> tuple[_Piece, np.ndarray, np.ndarray | None]:
    """One piece as bf16 bits, and for a weight_v its rows' squared norms (of the stored, rounded values)."""
    s = piece.spec
    row = math.prod(s.shape[1:]) if s.shape else 1
    rng = np.random.default_rng([seed, _crc(component), _crc(s.name), piece.index])
    x = rng.standard_normal(piece.rows * row, dtype=np.float32)
    x *= np.float32(s.std)
    if s.mean:
        x += np.float32(s.mean)
    bits = to_bf16(x)
    sq = None
    if s.kind == "weight_v":
        v = (bits.astype(np.uint32) << 16).view(np.float32).reshape(piece.rows, row)
        sq = np.einsum("ij,ij->i", v, v, dtype=np.float64)
    return piece, bits, sq


def _weight_g(seed: int, component: str, spec: TensorSpec, sq_norms: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([seed, _crc(component), _crc(spec.name), 0])
    jitter = 1 + WEIGHT_NORM_JITTER * rng.standard_normal(sq_norms.shape)
    return to_bf16((spec.gain * np.sqrt(sq_norms) * jitter).astype(np.float32))


def write_safetensors(
    path: Path, specs: Sequence[TensorSpec], seed: int, component: str, workers: int | None = None
) -> int:
    """Draw and write the tensors of `specs` to `path`, one piece at a time; return the file size."""
    header, data_size = safetensors_header(specs)
    workers = workers or min(8, os.cpu_count() or 2)
    pending: collections.deque = collections.deque()
    norms: dict[str, list[np.ndarray]] = {}
    by_g = {s.name[: -len("g")] + "v": s for s in specs if s.kind == "weight_g"}
    with open(path, "wb") as f, ThreadPoolExecutor(workers) as pool:
        f.write(header)

        def drain_one():
            piece, bits, sq = pending.popleft().result()
            f.write(memoryview(bits))
            s = piece.spec
            if sq is not None:
                norms.setdefault(s.name, []).append(sq)
            rows_done = sum(len(a) for a in norms.get(s.name, ()))
            if s.kind == "weight_v" and rows_done == s.shape[0]:  # v complete: its g follows in the data
                g = by_g[s.name]
                f.write(memoryview(_weight_g(seed, component, g, np.concatenate(norms.pop(s.name)))))

        for piece in _pieces(specs):
            pending.append(pool.submit(_draw_piece, seed, component, piece))
            if len(pending) > 2 * workers:
                drain_one()
        while pending:
            drain_one()
        size = f.tell()
    if size != len(header) + data_size:
        raise AceStepError(f"{path}: wrote {size} bytes, the header promises {len(header) + data_size}")
    return size


def write_silence_latent(path: Path, seed: int, channels: int) -> None:
    """tiny.py's silence latent (the same values for a seed), channel-first float32 [1, C, 15000], torch.save'd."""
    import torch

    latent = tiny_weights.silence_latent(tiny._rng(seed, "silence_latent"), channels)
    torch.save(torch.from_numpy(latent), path)


# --- The root.


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_component(parent: Path, component: Component, seed: int) -> dict:
    folder = parent / component.folder
    files = component.files() if component.files else None
    tiny._write_folder(folder, component.configs, {}, files)  # configs and tokenizer files, as tiny.py writes them
    specs = layout(component)
    write_safetensors(folder / component.weights, specs, seed, component.folder)
    if component.silence_channels is not None:
        write_silence_latent(folder / SILENCE_FILE, seed, component.silence_channels)
    return {"tensors": len(specs), "params": sum(s.numel for s in specs)}


def _parse_only(only: str | Sequence[str] | None) -> list[str]:
    names = COMPONENTS if only is None else [n for n in (only.split(",") if isinstance(only, str) else only) if n]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown or not names:
        raise AceStepError(
            f"--only: unknown component(s) {', '.join(unknown) or '(none)'} (choose from {', '.join(COMPONENTS)})"
        )
    return [n for n in COMPONENTS if n in names]


def build_checkpoint(
    root: str | Path,
    components: dict[str, Component],
    seed: int = 0,
    only: str | Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Write `components` (those named in `only`) under `root`, atomically; return `root`."""
    root = Path(root)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise AceStepError(f"seed must be a non-negative integer, got {seed!r}")
    names = _parse_only(only)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AceStepError(f"{root}: already exists and is not an empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    total, peak, start = 0, 0, time.perf_counter()
    try:
        for name in names:
            component = components[name]
            reset_peak_rss()
            t0 = time.perf_counter()
            counts = write_component(staging, component, int(seed))
            seconds, rss = time.perf_counter() - t0, peak_rss_bytes()
            size = _folder_size(staging / component.folder)
            total, peak = total + size, max(peak, rss)
            log(
                f"{component.folder}: {counts['tensors']} tensors, {counts['params']:,} params, "
                f"{size / 1e9:.3f} GB on disk, {seconds:.1f} s, peak RSS {rss / 2**20:.0f} MiB"
            )
        os.replace(staging, root)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise AceStepError(f"{root}: cannot write the checkpoint ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"{root}: {total / 1e9:.3f} GB in {time.perf_counter() - start:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
    return root


def build_full_checkpoint(
    root: str | Path, seed: int = 0, only: str | Sequence[str] | None = None, log: Callable[[str], None] = print
) -> Path:
    """Write the full-size random-weight root (the components in `only`, default all) at `root`; return it."""
    return build_checkpoint(root, full_components(), seed, only, log)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="the checkpoint root to create (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(COMPONENTS), help=f"comma list of {', '.join(COMPONENTS)}")
    args = p.parse_args(argv)
    try:
        return build_full_checkpoint(args.root, args.seed, args.only)
    except AceStepError as e:
        p.exit(1, f"error: {e}\n")


if __name__ == "__main__":
    main()
