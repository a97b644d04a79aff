"""Prefill time and decode speed of the 5 Hz planner LM, MLX beside transformers, random weights.

The planner LM is a Qwen3ForCausalLM with a 217204-id vocabulary (Qwen3's ids plus the
`<|audio_code_N|>` tokens) and a tied output head. Each row is one (size, side,
precision) measured in a fresh process, so its memory peak is its own:

- **MLX**: `PlannerLM` with random weights, cast and quantized as the converter
  does it (`quantize_model` with the model's own rules: the embedding / tied head at 8 bits at least).
  On Linux the child preloads OpenBLAS, as the pipeline benchmark does.
- **Reference**: transformers' `Qwen3ForCausalLM(config)` with its random init,
  default thread count, `torch.inference_mode()`, a `DynamicCache`, and a loop
  written as ACE-Step's `_generate_with_cfg_custom`: one batched forward per
  token, `outputs.logits[:, -1]`, CFG combined in float32, restricted to the code
  range, top-p on the untempered softmax, then temperature and a multinomial draw.

Both sides get the same shapes: a conditional and an unconditional prompt of the
same length (random text ids, so no padding), CFG scale 2, temperature 0.85, top-p 0.9.

**Prefill** is the prompt's forward into an empty KV cache as each side's decode loop
runs it, timed at batch 1 (the conditional prompt) and batch 2 (the [conditional,
unconditional] pair). MLX: `generate_codes` with one code (its prefill, which takes
the last row's hidden state through the code rows of the head only, plus one draw).
Reference: the ACE-Step loop's first forward, the tied head over every prompt row
and the whole vocabulary. Two batch-1 variants put both sides on the same work:
"all rows" (the whole head on every prompt row: `PlannerLM.logits`; the
reference's own loop, so its value is reused) and "last row" (the whole head on
the last row only: `lm.model` then `embed_tokens.as_linear(h[:, -1:])`; transformers'
`logits_to_keep=1`). Each prefill is timed `prefill_repeats` times after a short
warm-up forward; the best is kept.

**Decode** runs the real loops. MLX: `planner.generate_codes` (batch 1 with
`cfg_scale=1`, batch 2 with CFG), which evaluates a step ahead with
`mx.async_eval`, never reads a token back and computes the head over the 64000
code rows only. Its `callback` (called once per step after the next forward is
queued) synchronizes the stream only at window boundaries: after `warmup` steps,
then every `window` steps, `repeats` windows in one call; a window's time covers
`window` forwards and draws and its mean step time is kept, the best window
reported (the host is shared, so the best is the least disturbed). The prefill
and the warm-up steps are outside every window. The reference loop is timed at
the same boundaries. tok/s at batch 1 is 1 / step time; at batch 2 a step still
yields one code, so the CFG cost is the ratio of the batch-2 step time to the
batch-1 one.

On MLX's CPU backend bfloat16 and quantized matmuls have no BLAS kernel and cost
about as much per row as a whole float32 matrix-vector product, so a 512-token
prefill would take many minutes: those rows use `slow_prompt` tokens (the
`prompt` column says which) and time each prefill once. Decode barely depends on
it (the KV cache is a few percent of the weights read per step).

Peak RSS is the process's `VmHWM`, reset before each phase (build excluded).
`step_bytes` is what one decode step reads at least: every weight, except that
MLX's head reads only the code rows of the tied embedding; bytes / step time is
the effective memory bandwidth.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks.common import ROOT, blas_in_use, child_env, peak_rss_bytes, reset_peak_rss
from benchmarks.pipeline_runs import PRECISIONS, REAL

# Spec: the 0.6B is Qwen3-0.6B's shape (the text encoder's), with the audio-code vocabulary.
_LM = REAL["text_encoder"] | dict(vocab_size=217204, max_position_embeddings=40960)
SIZES = {
    "0.6B": _LM,
    "1.7B": _LM | dict(hidden_size=2048, intermediate_size=6144),
    "4B": _LM | dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
    "tiny": _LM
    | dict(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    ),
}
# (<|audio_code_0|> id, allowed codes, eos id = <|im_end|>): 64000 of the 65535 code ids are allowed.
CODES = {"real": (151669, 64000, 151645), "tiny": (600, 256, 2)}
REFERENCE_PRECISIONS = ("float32", "bfloat16")
CFG_SCALE, TEMPERATURE, TOP_P = 2.0, 0.85, 0.9
SLOW_ON_CPU = ("bfloat16", "q8", "q4")


def parameter_count(config: dict) -> int:
    h, i, n = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    layer = h * (2 * q + 2 * kv) + 3 * h * i + 2 * h + 2 * config["head_dim"]  # projections, norms, q/k norms
    return config["vocab_size"] * h + n * layer + h  # tied head: the embedding once


def prompts(config: dict, length: int, first_code: int) -> tuple[list[int], list[int]]:
    import numpy as np

    rng = np.random.default_rng(0)
    cond, uncond = rng.integers(0, min(first_code, config["vocab_size"]), (2, length)).tolist()
    return cond, uncond


@contextlib.contextmanager
def _phase(rss: dict, name: str):
    reset_peak_rss()
    yield
    rss[name] = max(rss.get(name, 0), peak_rss_bytes())


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _boundaries(spec: dict) -> tuple[list[int], int]:
    """Step indices at which windows start/end, and the number of codes that makes the last one the last forward."""
    marks = [spec["warmup"] + k * spec["window"] for k in range(spec["repeats"] + 1)]
    return marks, marks[-1] + 1


def _windows(marks: dict, spec: dict) -> list[float]:
    points = _boundaries(spec)[0]
    return [(marks[b] - marks[a]) / spec["window"] for a, b in zip(points, points[1:])]


# -- one measurement per process ---------------------------------------------------------------


def run_mlx(spec: dict, rss: dict) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.cache import make_prompt_cache

    from mlx_acestep.models.planner_lm import PlannerLM, planner_args
    from mlx_acestep.planner.lm import CodeTokens, generate_codes, left_pad
    from mlx_acestep.quantization import MODES, quantize_model

    with _phase(rss, "build"):
        mx.random.seed(0)
        lm = PlannerLM(planner_args(spec["config"]))
        dtype, quantize = PRECISIONS[spec["precision"]]
        lm.set_dtype(getattr(mx, dtype))
        if MODES[quantize]:
            quantize_model(lm, MODES[quantize], 64, lm.QUANTIZE_KEEP, lm.QUANTIZE_AT_LEAST_8)
        mx.eval(lm.parameters())
        mx.clear_cache()
    mx.reset_peak_memory()
    codes = CodeTokens(*spec["codes"])
    cond, uncond = prompts(spec["config"], spec["prompt"], codes.first_id)
    mx.eval(lm.logits(mx.array([cond[:8]]), make_prompt_cache(lm)))  # first graph, compiled activations

    def loop_prefill(rows):
        generate_codes(lm, rows[0], rows[-1], 1, codes, codes.eos_id, cfg_scale=CFG_SCALE if len(rows) == 2 else 1.0)

    def all_rows():
        ids, key_mask = left_pad([cond], codes.eos_id)
        mx.eval(lm.logits(ids, make_prompt_cache(lm), key_mask)[:, -1])

    def last_row():
        h = lm.model(mx.array([cond]), make_prompt_cache(lm))
        mx.eval(lm.model.embed_tokens.as_linear(h[:, -1:]))

    def decode(batch: int) -> list[float]:
        points, n_codes = _boundaries(spec)
        marks = {}

        def callback(step, total):
            if step in points and step < total:
                mx.synchronize()
                marks[step] = time.perf_counter()

        generate_codes(
            lm,
            cond,
            uncond,
            n_codes,
            codes,
            codes.eos_id,
            cfg_scale=CFG_SCALE if batch == 2 else 1.0,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            callback=callback,
        )
        return _windows(marks, spec)

    result = _measure(spec, rss, loop_prefill, {"all_rows": all_rows, "last_row": last_row}, decode, cond, uncond)
    weights = sum(v.nbytes for _, v in tree_flatten(lm.parameters()))
    table = sum(v.nbytes for _, v in tree_flatten(lm.model.embed_tokens.parameters()))
    skipped = table * (1 - codes.count / lm.args.vocab_size) if lm.args.tie_word_embeddings else 0
    return result | {"weights_bytes": weights, "step_bytes": weights - skipped, "mlx_peak_bytes": mx.get_peak_memory()}


def run_reference(spec: dict, rss: dict) -> dict:
    import torch
    from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    with _phase(rss, "build"):
        torch.set_default_dtype(getattr(torch, spec["precision"]))  # built in the precision: no float32 copy
        config = Qwen3Config(**{k: v for k, v in spec["config"].items() if k != "model_type"})
        model = Qwen3ForCausalLM(config).eval()
        torch.set_default_dtype(torch.float32)
    first, count, eos = spec["codes"]
    allowed = torch.zeros(config.vocab_size, dtype=torch.bool)
    allowed[first : first + count] = True
    cond, uncond = prompts(spec["config"], spec["prompt"], first)
    generator = torch.Generator().manual_seed(0)

    def forward(ids, cache, keep=0):
        mask = torch.ones(ids.shape[0], cache.get_seq_length() + ids.shape[1], dtype=torch.long)
        return model(
            input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=keep
        ).logits[:, -1]

    def sample(logits):
        scores = logits.float()
        scores = scores[1] + CFG_SCALE * (scores[0] - scores[1]) if len(scores) == 2 else scores[0]
        scores = scores.masked_fill(~allowed, -torch.inf)
        probs = scores.softmax(-1)
        ordered = probs.sort(descending=True).values
        threshold = ordered[(ordered.cumsum(-1) - ordered) < TOP_P].min()
        scores = scores.masked_fill(probs < threshold, -torch.inf)
        return torch.multinomial((scores / TEMPERATURE).softmax(-1), 1, generator=generator)

    def decode(batch: int) -> list[float]:
        points, n_codes = _boundaries(spec)
        rows = [cond, uncond][:batch]
        cache = DynamicCache(config=config)
        logits, marks = forward(torch.tensor(rows), cache), {}
        for i in range(n_codes - 1):
            token = sample(logits)
            logits = forward(token.view(1, 1).expand(batch, 1), cache)
            if i + 1 in points:
                marks[i + 1] = time.perf_counter()
        return _windows(marks, spec)

    def prefill(rows, keep=0):
        forward(torch.tensor(rows), DynamicCache(config=config), keep)

    with torch.inference_mode():
        forward(torch.tensor([cond[:8]]), DynamicCache(config=config))  # warm-up
        result = _measure(spec, rss, prefill, {"last_row": lambda: prefill([cond], keep=1)}, decode, cond, uncond)
    result["prefill_variants_s"]["all_rows"] = result["prefill_s"]["1"]  # the loop's own prefill
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return result | {"weights_bytes": weights, "step_bytes": weights}


def _measure(spec, rss, prefill, variants, decode, cond, uncond) -> dict:
    repeats = spec["prefill_repeats"]
    with _phase(rss, "prefill"):
        prefill_s = {str(len(rows)): _best(lambda: prefill(rows), repeats) for rows in ([cond], [cond, uncond])}
        variants_s = {name: _best(fn, repeats) for name, fn in variants.items()}
    steps = {}
    for batch in (1, 2):
        with _phase(rss, "decode"):
            steps[str(batch)] = decode(batch)
    return {"prefill_s": prefill_s, "prefill_variants_s": variants_s, "step_s": steps}


def child_main(argv: list[str]) -> None:
    spec, rss = json.loads(argv[0]), {}
    side = "reference" if spec["side"] == "reference" else "mlx"
    result = run_reference(spec, rss) if side == "reference" else run_mlx(spec, rss)
    print("RESULT " + json.dumps(result | {"rss": rss, "blas": blas_in_use(side)}), flush=True)


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.lm_runs", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=child_env(spec["side"]),
        cwd=ROOT,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    return (
        json.loads(line[7:]) if line else {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    )


# -- the whole benchmark -----------------------------------------------------------------------


def _mlx_on_cpu() -> bool:
    import mlx.core as mx

    return mx.default_device() == mx.cpu


def run_lm_benchmark(
    sizes: list[str],
    precisions: list[str],
    *,
    reference_precisions: tuple[str, ...] | list[str] = ("float32",),
    prompt: int = 512,
    slow_prompt: int | None = 64,
    warmup: int = 4,
    window: int = 8,
    repeats: int = 3,
    prefill_repeats: int = 2,
    log=print,
) -> list[dict]:
    """One row per (size, side, precision), in that order; a failed child gives a row with `error`."""
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown MLX precision {p!r} (choose from {', '.join(PRECISIONS)})")
    for p in reference_precisions:
        if p not in REFERENCE_PRECISIONS:
            raise ValueError(f"unknown reference precision {p!r} (choose from {', '.join(REFERENCE_PRECISIONS)})")
    slow = slow_prompt if slow_prompt and _mlx_on_cpu() else None
    rows = []
    for size in sizes:
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r} (choose from {', '.join(SIZES)})")
        config = SIZES[size]
        runs = [("mlx", p) for p in precisions] + [("reference", p) for p in reference_precisions]
        for side, precision in runs:
            is_slow = bool(slow) and side == "mlx" and precision in SLOW_ON_CPU
            length = min(prompt, slow) if is_slow else prompt
            spec = dict(
                side=side,
                precision=precision,
                config=config,
                codes=CODES["tiny" if size == "tiny" else "real"],
                prompt=length,
                warmup=warmup,
                window=window,
                repeats=repeats,
                prefill_repeats=1 if is_slow else prefill_repeats,
            )
            log(f"{size} {side} {precision}, prompt {length} ...")
            start = time.perf_counter()
            result = run_child(spec)
            row = {"size": size, "side": side, "precision": precision, "prompt": length, **result}
            if "error" not in result:
                steps = {b: min(s) for b, s in result["step_s"].items()}
                row |= {
                    "best_step_s": steps,
                    "tok_s": 1 / steps["1"],
                    "cfg_ratio": steps["2"] / steps["1"],
                    "bandwidth_gbs": result["step_bytes"] / steps["1"] / 1e9,
                    "peak_rss": max(v for k, v in result["rss"].items() if k != "build"),
                }
            log(f"  {time.perf_counter() - start:.0f} s" + (f": failed: {row['error']}" if "error" in row else ""))
            rows.append(row)
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets per size, where the rows to judge them exist (ratios; None when a row is missing)."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        by = {(r["side"], r["precision"]): r for r in rows if r["size"] == size and "error" not in r}
        ref = by.get(("reference", "float32"))

        def speedup(precision):
            mlx = by.get(("mlx", precision))
            return mlx["tok_s"] / ref["tok_s"] if mlx and ref else None

        cfg = {p: r["cfg_ratio"] for (side, p), r in by.items() if side == "mlx"}
        f32, q8 = speedup("float32"), speedup("q8")
        out.append(
            {
                "size": size,
                "mlx_f32_vs_ref_f32": f32,
                "mlx_f32_met": f32 is not None and f32 >= 1.2,
                "mlx_q8_vs_ref_f32": q8,
                "mlx_q8_met": q8 is not None and q8 >= 2.0,
                "cfg_ratio": cfg,
                "cfg_met": bool(cfg) and max(cfg.values()) <= 1.5,  # "well under 2x": 1.5 at most
            }
        )
    return out


def config_table(sizes: list[str]) -> str:
    lines = [
        "| size | hidden | intermediate | layers | q / kv heads | parameters | float32 weights (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        c = SIZES[s]
        n = parameter_count(c)
        lines.append(
            f"| {s} | {c['hidden_size']} | {c['intermediate_size']} | {c['num_hidden_layers']} | "
            f"{c['num_attention_heads']} / {c['num_key_value_heads']} | {n / 1e9:.3f} B | {n * 4 / 1e9:.2f} |"
        )
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| size | side | precision | BLAS | prompt | prefill b1 (s) | prefill b2 (s) | b1, all rows (s) | b1, last row (s) | "
        "decode b1 (tok/s) | b1 step (s) | b2 CFG step (s) | b2 / b1 | weights (GB) | read / step (GB) | GB/s at b1 | "
        "vs ref f32 | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    refs = {r["size"]: r for r in rows if r["side"] == "reference" and r["precision"] == "float32" and "error" not in r}
    for r in rows:
        head = f"| {r['size']} | {r['side']} | {r['precision']} |"
        if "error" in r:
            lines.append(f"{head} | | failed: {r['error']} |" + " |" * 13)
            continue
        ref, pre, step = refs.get(r["size"]), r["prefill_s"], r["best_step_s"]
        # rows recorded before the prefill variants and step bytes were split out (the committed 2-core results)
        var = r.get("prefill_variants_s") or {"all_rows": pre["1"], "last_row": r["prefill_last_row_s"]}
        vs = f"{r['tok_s'] / ref['tok_s']:.2f}" if ref else ""
        lines.append(
            f"{head} {r['blas']} | {r['prompt']} | {pre['1']:.2f} | {pre['2']:.2f} | {var['all_rows']:.2f} | {var['last_row']:.2f} | "
            f"{r['tok_s']:.2f} | {step['1']:.3f} | {step['2']:.3f} | {r['cfg_ratio']:.2f} | {r['weights_bytes'] / 1e9:.2f} | "
            f"{r.get('step_bytes', r['weights_bytes']) / 1e9:.2f} | {r['bandwidth_gbs']:.1f} | {vs} | {r['peak_rss'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def targets_markdown(rows: list[dict]) -> str:
    def fmt(x, met):
        return "not measured" if x is None else f"{x:.2f}x ({'met' if met else 'not met'})"

    lines = []
    for t in targets(rows):
        cfg = ", ".join(f"{p} {v:.2f}" for p, v in t["cfg_ratio"].items()) or "not measured"
        lines.append(
            f"- **{t['size']}**: MLX float32 / transformers float32 tok/s {fmt(t['mlx_f32_vs_ref_f32'], t['mlx_f32_met'])} "
            f"(target 1.2x); MLX q8 / transformers float32 {fmt(t['mlx_q8_vs_ref_f32'], t['mlx_q8_met'])} (target 2x); "
            f"CFG batch-2 / batch-1 step: {cfg} ({'met' if t['cfg_met'] else 'not met'}: target well under 2, read as <= 1.5)"
        )
    return "\n".join(lines)


def machine_line() -> str:
    import mlx.core as mx

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; MLX {mx.__version__} "
        f"({'CPU' if _mlx_on_cpu() else 'GPU'}), Python {platform.python_version()}"
    )


if __name__ == "__main__":
    child_main(sys.argv[1:])
