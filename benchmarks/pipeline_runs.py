"""RTF and peak memory per phase of a turbo text2music run, MLX beside the PyTorch reference (`bench_pipeline.py`).

Each measurement runs in a fresh process, so its memory peak is its own. The MLX
side runs the real pipeline (`ACEStep.generate_from_tokens`, modules loaded per
phase as the CLI does) on a converted model: `--random-weights` builds the real
model size with random weights once into the cache (no download needed), or
`--model` names a real one. The reference side, when torch is installed, builds
diffusers' ACE-Step 1.5 DiT and condition encoder, its `AutoencoderOobleck` and
transformers' Qwen3 at the same size with random weights, and runs the same
phases on the same shapes in float32: text encoder, condition encoder, the 8
turbo steps (Euler, shift 3), and the VAE decode (whole for up to 30 s; tiled
beyond, as untiled 120 s would need ~22 GB).

Both sides get the same token counts (caption 96, lyrics 384 tokens: a typical
prompt and song text) instead of tokenizing, so their work is identical. RTF is
seconds of audio per second of compute (higher is faster), loading excluded.
Memory is the process's peak resident set per phase (Linux `VmHWM`, reset between
phases); MLX's own allocator peak is reported beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, blas_in_use, child_env, peak_rss_bytes, reset_peak_rss

TEXT_TOKENS, LYRIC_TOKENS = 96, 384
TURBO_SHIFT3 = [1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3]

# Real sizes (spec 1.3-1.5): the 2B turbo DiT, Qwen3-Embedding-0.6B, the Oobleck VAE.
REAL = {
    "dit": dict(
        model_type="acestep",
        is_turbo=True,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        attention_bias=False,
        sliding_window=128,
        use_sliding_window=True,
        layer_types=["sliding_attention", "full_attention"] * 12,
        in_channels=192,
        audio_acoustic_hidden_dim=64,
        patch_size=2,
        text_hidden_dim=1024,
        timbre_hidden_dim=64,
        num_lyric_encoder_hidden_layers=8,
        num_timbre_encoder_hidden_layers=4,
        num_attention_pooler_hidden_layers=2,
        pool_window_size=5,
        fsq_dim=2048,
        fsq_input_levels=[8, 8, 8, 5, 5, 5],
        fsq_input_num_quantizers=1,
        timbre_fix_frame=750,
    ),
    "text_encoder": dict(
        model_type="qwen3",
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151669,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        attention_bias=False,
    ),
    "vae": dict(
        _class_name="AutoencoderOobleck",
        audio_channels=2,
        channel_multiples=[1, 2, 4, 8, 16],
        decoder_channels=128,
        decoder_input_channels=64,
        downsampling_ratios=[2, 4, 4, 6, 10],
        encoder_hidden_size=128,
        sampling_rate=48000,
    ),
}
# A tiny configuration with the same structure, to check that the benchmark runs (tests).
TINY = {
    "dit": REAL["dit"]
    | dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        layer_types=["sliding_attention", "full_attention"],
        text_hidden_dim=32,
        num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2,
        fsq_dim=64,
    ),
    "text_encoder": REAL["text_encoder"]
    | dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=600,
    ),
    "vae": REAL["vae"] | dict(channel_multiples=[1, 1, 1, 1, 2], decoder_channels=16, encoder_hidden_size=16),
}
PRECISIONS = {
    "float32": ("float32", "none"),
    "bfloat16": ("bfloat16", "none"),
    "q8": ("float32", "q8"),
    "q4": ("float32", "q4"),
}


# -- the random-weight model -------------------------------------------------------------------


def random_weight_model(cache: Path, precision: str, tiny: bool = False, log=print) -> Path:
    """A converted model folder of the real (or tiny) size with random weights, built once into `cache`."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_acestep.convert.component import ConvertOptions, write_component
    from mlx_acestep.loading import SILENCE_FILE
    from mlx_acestep.models.dit import AceStepConfig, AceStepModel
    from mlx_acestep.models.text_encoder import Qwen3TextEncoder, text_encoder_args
    from mlx_acestep.models.vae import AutoencoderOobleck, OobleckConfig

    configs = TINY if tiny else REAL
    dtype, quantize = PRECISIONS[precision]
    root = cache / "random-weights" / f"{'tiny' if tiny else '2b-turbo'}-{precision}"
    if root.is_dir():
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        log(f"using the random-weight model in {root} ({size / 1e9:.1f} GB; `bench --clean` removes them)")
        return root
    log(
        f"building the {'tiny' if tiny else 'real-size'} random-weight model ({precision}) in {root} "
        "(once; `bench --clean` removes it)"
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        opts = ConvertOptions(dtype=dtype, quantize=quantize)
        mx.random.seed(0)

        def write(folder, kind, model, config, options):  # the model's own random initialisation, written as converted
            weights = dict(tree_flatten(model.parameters()))
            write_component(tmp / folder, kind, model, weights, config, options, [], tmp, folder)

        write(
            "Qwen3-Embedding-0.6B",
            "text_encoder",
            Qwen3TextEncoder(text_encoder_args(configs["text_encoder"])),
            configs["text_encoder"],
            opts,
        )
        _copy_tokenizer(tmp / "Qwen3-Embedding-0.6B")
        write("acestep-v15-turbo", "dit", AceStepModel(AceStepConfig.from_dict(configs["dit"])), configs["dit"], opts)
        silence = np.random.default_rng(0).standard_normal((1, 15000, 64)).astype(np.float32)
        mx.save_safetensors(str(tmp / "acestep-v15-turbo" / SILENCE_FILE), {"silence_latent": mx.array(silence)})
        # convolutions only: the VAE stays in dtype
        write(
            "vae",
            "vae",
            AutoencoderOobleck(OobleckConfig.from_dict(configs["vae"])),
            configs["vae"],
            ConvertOptions(dtype=dtype),
        )
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _copy_tokenizer(dst: Path) -> None:
    """The pipeline opens a tokenizer even when fed token ids; the tiny one shipped with the package serves."""
    from mlx_acestep.tiny import text_tokenizer_files

    for name, data in text_tokenizer_files().items():
        (dst / name).write_bytes(data)


# -- one measurement per process ---------------------------------------------------------------


def _token_ids(vocab: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.integers(0, min(vocab, 500), (1, TEXT_TOKENS)), rng.integers(0, min(vocab, 500), (1, LYRIC_TOKENS)))


def run_mlx(target: str, frames: int) -> dict:
    """`target`: a converted root, or the JSON of resolved `ModelFolders` (a source's cache entries)."""
    import mlx.core as mx
    import numpy as np

    from mlx_acestep.conditioning.inputs import PromptTokens
    from mlx_acestep.diffusion.sampler import TurboSettings
    from mlx_acestep.engine import initial_noise
    from mlx_acestep.hub import ModelFolders
    from mlx_acestep.pipeline import ACEStep, PhaseMeter

    class Meter(PhaseMeter):  # adds the process's peak RSS per phase
        def __init__(self):
            super().__init__()
            self.rss: dict[str, int] = {}

        @contextlib.contextmanager
        def phase(self, name):
            reset_peak_rss()
            with super().phase(name):
                yield
            self.rss[name] = max(self.rss.get(name, 0), peak_rss_bytes())

    if target.startswith("{"):
        pipe = ACEStep(ModelFolders(**json.loads(target)), keep_loaded=False)
    else:
        pipe = ACEStep.from_pretrained(target, keep_loaded=False)
    text_ids, lyric_ids = _token_ids(10**9)
    tokens = PromptTokens(text_ids, np.ones_like(text_ids, bool), lyric_ids, np.ones_like(lyric_ids, bool))
    noise = initial_noise([0], frames, 64, pipe.dtype)
    meter = Meter()
    out = pipe.generate_from_tokens(tokens, frames, noise, TurboSettings(shift=3.0), meter=meter)
    mx.eval(out.waveform)
    phases = {k: v for k, v in meter.seconds.items() if k != "load"}
    return {"seconds": phases, "load_s": meter.seconds.get("load", 0.0), "rss": meter.rss, "mlx_peak": meter.peak}


def run_reference(frames: int, tiny: bool) -> dict:
    import inspect

    import torch
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    def build(cls, config):
        names = set(inspect.signature(cls.__init__).parameters)
        return cls(**{k: v for k, v in config.items() if k in names}).eval()

    configs = TINY if tiny else REAL
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    start = time.perf_counter()
    text_encoder = Qwen3Model(
        Qwen3Config(**{k: v for k, v in configs["text_encoder"].items() if k != "model_type"})
    ).eval()
    condition = build(AceStepConditionEncoder, configs["dit"])
    dit = build(AceStepTransformer1DModel, configs["dit"])
    vae = build(AutoencoderOobleck, {k: v for k, v in configs["vae"].items() if not k.startswith("_")})
    load_s = time.perf_counter() - start
    text_ids, lyric_ids = (torch.from_numpy(a) for a in _token_ids(configs["text_encoder"]["vocab_size"]))
    silence = torch.randn(1, max(frames, 750), 64)
    seconds, rss = {}, {}

    def phase(name, fn):
        reset_peak_rss()
        t0 = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - t0
        rss[name] = peak_rss_bytes()
        return result

    text_hidden, lyric_hidden = phase(
        "text", lambda: (text_encoder(text_ids).last_hidden_state, text_encoder.embed_tokens(lyric_ids))
    )
    mask_t, mask_l = torch.ones_like(text_ids, dtype=torch.bool), torch.ones_like(lyric_ids, dtype=torch.bool)
    states, _ = phase(
        "condition",
        lambda: condition(
            text_hidden, mask_t, lyric_hidden, mask_l, silence[:, :750], torch.zeros(1, dtype=torch.long)
        ),
    )
    context = torch.cat([silence[:, :frames], torch.ones(1, frames, 64)], dim=-1)

    def sample():
        x = torch.randn(1, frames, 64)
        for k, t in enumerate(TURBO_SHIFT3):
            tt = torch.full((1,), t)
            v = dit(
                hidden_states=x,
                timestep=tt,
                timestep_r=tt,
                encoder_hidden_states=states,
                context_latents=context,
                return_dict=False,
            )[0]
            x = x - v * t if k == len(TURBO_SHIFT3) - 1 else x - v * (t - TURBO_SHIFT3[k + 1])
        return x

    latents = phase("dit", sample)
    if frames > 750:
        vae.enable_tiling()
    phase("vae", lambda: vae.decode(latents.transpose(1, 2)).sample)
    return {"seconds": seconds, "load_s": load_s, "rss": rss, "mlx_peak": {}}


def child_main(argv: list[str]) -> None:
    side, frames, target, tiny = argv[0], int(argv[1]), argv[2], argv[3] == "tiny"
    result = run_mlx(target, frames) if side == "mlx" else run_reference(frames, tiny)
    print("RESULT " + json.dumps(result | {"blas": blas_in_use(side)}), flush=True)


def run_child(side: str, frames: int, target: str, tiny: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.pipeline_runs", side, str(frames), target, "tiny" if tiny else "real"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(side), cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(line[7:])


# -- the whole benchmark -----------------------------------------------------------------------


def run_benchmark(
    durations: list[float],
    precisions: list[str],
    *,
    model: str | None = None,
    tiny: bool = False,
    reference: bool | None = None,
    cache_dir: str | None = None,
    log=print,
) -> list[dict]:
    """One row per (duration, side): per-phase seconds and peak memory, total, RTF."""
    from mlx_acestep.cache import cache_root

    if reference is None:
        from importlib.util import find_spec

        reference = find_spec("torch") is not None and find_spec("diffusers") is not None
    cache = cache_root(cache_dir)
    targets = {}
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
        targets[precision] = str(model) if model else str(random_weight_model(cache, precision, tiny, log))
    rows = []
    for duration in durations:
        frames = max(128, int(round(duration, 1) * 48000) // 1920)
        runs = [(f"mlx {p}", "mlx", targets[p]) for p in precisions]
        if reference:
            runs.append(("reference float32", "reference", "-"))
        for label, side, target in runs:
            log(f"running {label} at {duration:g} s ...")
            result = run_child(side, frames, target, tiny)
            row = {"duration": duration, "side": label, **result}
            if "error" not in result:
                compute = sum(result["seconds"].values())
                row |= {
                    "total_s": compute,
                    "rtf": duration / compute,
                    "peak_rss": max(result["rss"].values(), default=0),
                }
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    phases = ("text", "condition", "dit", "vae")
    lines = [
        "| audio | side | BLAS | "
        + " | ".join(f"{p} (s)" for p in phases)
        + " | total (s) | RTF | ratio | peak RSS (GB) | mem ratio | load (s) |",
        "|---|---|---|" + "---|" * (len(phases) + 6),
    ]
    refs = {r["duration"]: r for r in rows if r["side"].startswith("reference") and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['duration']:g} s | {r['side']} | | failed: {r['error']} |" + " |" * (len(phases) + 5))
            continue
        ref = refs.get(r["duration"])
        ratio = f"{r['total_s'] / ref['total_s']:.2f}" if ref else ""
        mem = f"{r['peak_rss'] / ref['peak_rss']:.2f}" if ref else ""
        cells = " | ".join(f"{r['seconds'].get(p, 0):.1f}" for p in phases)
        lines.append(
            f"| {r['duration']:g} s | {r['side']} | {r['blas']} | {cells} | {r['total_s']:.1f} | {r['rtf']:.2f} | "
            f"{ratio} | {r['peak_rss'] / 1e9:.2f} | {mem} | {r['load_s']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    """RTF against duration, one line per side (needs matplotlib: `pip install mlx-acestep[bench]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for side in dict.fromkeys(r["side"] for r in rows):
        points = sorted((r["duration"], r["rtf"]) for r in rows if r["side"] == side and "rtf" in r)
        if points:
            ax.plot(*zip(*points), marker="o", label=side)
    ax.set_xlabel("audio duration (s)")
    ax.set_ylabel("RTF (s of audio per s of compute)")
    ax.set_title(f"ACE-Step 1.5 turbo, no LM: {platform.machine()} {platform.system()}, {os.cpu_count()} cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.part")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)
    plt.close(fig)
    return True


if __name__ == "__main__":
    child_main(sys.argv[1:])
