"""Peak resident memory of `generate` per phase at full size (random weights): the memory table of issue 28.

    python benchmarks/bench_memory.py run MODEL --seconds 30 [--steps 1] [--codes 8] [--layers 2] [--stop-after-dit]
    python benchmarks/bench_memory.py table benchmarks/results/memory-2core-x86.json

`run` starts one child process that runs the real pipeline (`ACEStep.generate`, `keep_loaded=False`, so each
phase loads its modules and frees them as the CLI does) on MODEL, a converted folder whose planner is the q8
1.7B LM, and appends one row to `--out`. Per phase (lm, text, condition, dit, vae, post) the row holds the
process's peak resident set (Linux VmHWM, reset when the phase starts, so each figure is everything resident
during that phase: the phase's weights and activations plus what is held across phases) and MLX's own peak.

On a CPU without a fast path for bf16 / q8 / q4 (about an hour per q8 DiT step at 240 s) three shortcuts keep
the run affordable; each is recorded in the row and the RESULTS.md section says how each was checked:

- `--steps 1`: the sampler's memory does not grow with steps (each step's activations are freed before the next);
- `--codes N`: the planner decodes N codes and the rest of the song's codes are filled in by repeating them; the
  KV cache (mlx-lm's, grown in 256-token blocks) is read at two points of the decode and its bytes reported, so
  the planner's peak at the song's full length is carried by the config's bytes per token;
- `--layers L`: only the first L of the DiT's 24 decoder layers are kept after loading (the rest freed before the
  phase's peaks are reset); the row reports the bytes of the layers dropped and how much of them the C allocator
  returned to the system (what it kept stays in the measured resident set), to add back to the DiT phase.

Resident figures include memory an earlier phase freed but the C allocator kept (glibc returns only large
blocks): they are what the system sees, which is what a run is killed on; MLX's peak (live arrays) is beside.

`--stop-after-dit` cancels the run once the sampler's last step is done (for the DiT carries). `table` prints the markdown
table with the carried figures beside the measured ones.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, child_env, peak_rss_bytes, reset_peak_rss  # noqa: E402

TARGET_GB = 4.0  # issue 28: a 240 s song with the 1.7B planner at q8 under 4 GB peak resident
ANCHORS = "acestep.cpp 2-3 GB with Q8 weights; upstream's MLX path 7 GB resident for the 2B without a planner"
KV_BLOCK = 256  # mlx-lm's KVCache grows its buffers in steps of this many tokens
CAPTION = "gentle piano, warm strings"
PHASES = ("lm", "text", "condition", "dit", "vae", "post")


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _patch_planner(cap: int, probes: list) -> None:
    """Decode at most `cap` codes (the rest repeated) and note the KV cache's size as it grows."""
    import mlx.core as mx
    import mlx_lm.models.cache as lm_cache
    import numpy as np

    from mlx_acestep.planner import lm as planner_lm

    made, original_cache, original_codes = [], lm_cache.make_prompt_cache, planner_lm.generate_codes

    def make_prompt_cache(model, *a, **k):
        cache = original_cache(model, *a, **k)
        made.append(cache)
        return cache

    def kv_bytes() -> tuple[int, int]:
        cache = made[-1]
        return sum(c.keys.nbytes + c.values.nbytes for c in cache if c.keys is not None), cache[0].offset

    def generate_codes(lm, cond, uncond, n_codes, *a, callback=None, **k):
        def probe(done, total):
            buffer, offset = kv_bytes()
            probes.append(
                dict(
                    code=done,
                    kv_bytes=buffer,
                    offset=offset,
                    rss=_rss_now(),
                    hwm=peak_rss_bytes(),
                    mlx_active=mx.get_active_memory(),
                    mlx_peak=mx.get_peak_memory(),
                )
            )
            if callback is not None:
                callback(done, total)

        values = original_codes(lm, cond, uncond, min(n_codes, cap), *a, callback=probe, **k)
        probes.append(dict(prompt=max(len(cond), len(uncond)), n_codes=n_codes))
        return np.resize(values, n_codes)

    lm_cache.make_prompt_cache = make_prompt_cache
    planner_lm.generate_codes = generate_codes


def _patch_layers(layers: int, dropped: dict) -> None:
    """After the denoiser loads, keep its first `layers` decoder layers; the rest are freed and their bytes noted."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_acestep.pipeline import residency

    original = residency.load_component

    def load_component(folder, component=None, parts=None):
        model = original(folder, component, parts)
        if component == "dit" and parts and "decoder" in parts:
            gone = model.decoder.layers[layers:]
            dropped["bytes"] = sum(v.nbytes for layer in gone for _, v in tree_flatten(layer.parameters()))
            dropped["layers"] = len(gone)
            before = _rss_now()
            model.decoder.layers = model.decoder.layers[:layers]
            del gone
            gc.collect()
            mx.clear_cache()
            # what the C allocator gave back: the rest stays resident (as it would with the layers kept)
            dropped["released"] = before - _rss_now()
            mx.reset_peak_memory()
            reset_peak_rss()  # the full load's peak is not the phase's: the kept layers' is measured from here
        return model

    residency.load_component = load_component


def child(args) -> dict:
    import mlx.core as mx

    from mlx_acestep.pipeline import ACEStep, PhaseMeter
    from mlx_acestep.pipeline import acestep as pipeline_module

    rss: dict[str, int] = {}
    where = _where()  # the commit that runs (HEAD may move while a long run goes on)

    class Meter(PhaseMeter):  # the pipeline's meter, with the process's peak resident set per phase
        @contextlib.contextmanager
        def phase(self, name):
            reset_peak_rss()
            try:
                with super().phase(name):
                    yield
            finally:
                rss[name] = max(rss.get(name, 0), peak_rss_bytes())
                Meter.last = self

    pipeline_module.PhaseMeter = Meter
    probes, dropped = [], {}
    if args.codes:
        _patch_planner(args.codes, probes)
    if args.layers:
        _patch_layers(args.layers, dropped)
    pipe = ACEStep.from_pretrained(args.model, keep_loaded=False, lm=args.lm if args.codes else None)
    baseline = _rss_now()

    def callback(progress):  # the stop comes once the last step is done, inside the DiT phase: its peak is whole
        return not (args.stop_after_dit and progress.phase == "dit" and 0 < progress.total == progress.done)

    start, stopped = time.perf_counter(), False
    try:
        pipe.generate(
            args.caption,
            "[Instrumental]",
            duration=args.seconds,
            steps=args.steps,
            seed=0,
            bpm=90,
            key="C major",
            time_signature="4",
            language="en",
            thinking=bool(args.codes),
            callback=callback,
        )
    except Exception as e:  # the cancellation after the DiT phase
        if not args.stop_after_dit or type(e).__name__ != "Cancelled":
            raise
        stopped = True
    meter = Meter.last
    return dict(
        model=str(args.model),
        dtype=str(pipe.dtype),
        seconds=args.seconds,
        frames=round(args.seconds * 25),
        steps=args.steps,
        codes=args.codes,
        layers=args.layers,
        dropped=dropped,
        stopped_after_dit=stopped,
        rss=rss,
        mlx_peak=dict(meter.peak),
        phase_s=dict(meter.seconds),
        wall_s=time.perf_counter() - start,
        baseline_rss=baseline,
        planner_probes=probes,
        weights=_weights(pipe),
        mlx_version=mx.__version__,
        **where,
    )


def _weights(pipe) -> dict:
    from mlx_acestep.pipeline.fit import folder_bytes

    folders = pipe.folders
    return {name: folder_bytes(getattr(folders, name)) for name in ("text_encoder", "dit", "vae", "lm")}


def _where() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return dict(
        commit=commit.stdout.strip(),
        machine=f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )


def run(args) -> None:
    cmd = [sys.executable, __file__, "child", *sys.argv[2:]]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env("mlx"), cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"the run failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    row = json.loads(line[7:]) | {"command": "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])}
    path = Path(args.out)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:  # runs may finish at once: one appends at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text()) if path.exists() else []
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(json.dumps([*rows, row], indent=1) + "\n")
        os.replace(tmp, path)
    print(json.dumps({k: row[k] for k in ("rss", "mlx_peak", "phase_s", "dropped")}, indent=1))


def kv_bytes_at(lm_config: dict, tokens: int, rows: int = 2, item: int = 4) -> int:
    """mlx-lm's KV buffers for `tokens` of context: whole 256-token blocks, keys and values, every layer."""
    blocks = math.ceil(tokens / KV_BLOCK) * KV_BLOCK
    per = 2 * lm_config["num_hidden_layers"] * lm_config["num_key_value_heads"] * lm_config["head_dim"]
    return rows * blocks * per * item


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "child"):
        r = sub.add_parser(name)
        r.add_argument("model")
        r.add_argument("--seconds", type=float, default=30.0)
        r.add_argument("--steps", type=int, default=1)
        r.add_argument("--codes", type=int, default=0, help="run the q8 1.7B planner, decoding this many codes")
        r.add_argument("--lm", default="1.7B", help="the planner's size (the tiny model has 0.6B)")
        r.add_argument("--layers", type=int, default=0, help="keep only this many DiT decoder layers")
        r.add_argument("--stop-after-dit", action="store_true")
        r.add_argument("--caption", default=CAPTION)
        r.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory-2core-x86.json"))
    t = sub.add_parser("table")
    t.add_argument("json")
    args = p.parse_args()
    if args.cmd == "child":
        print("RESULT " + json.dumps(child(args)), flush=True)
    elif args.cmd == "run":
        run(args)
    else:
        from benchmarks.memory_table import table

        print(table(json.loads(Path(args.json).read_text())))


if __name__ == "__main__":
    main()
