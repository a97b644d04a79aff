"""The memory table of `bench_memory.py`: per (DiT precision, song length), each phase's peak resident set and
the run's peak (the largest phase), with what was measured told apart from what was carried.

Carries, each from a measured row:
- planner (`lm`): the measured phase peak plus the KV bytes the full song adds over the codes decoded
  (mlx-lm's 256-token blocks, the config's bytes per token, both CFG rows, float32). The planner phase does not
  depend on the DiT's precision (it runs before the DiT loads, and frees its LM after), so one measurement per
  length serves every row.
- dit with `--layers L`: the measured phase peak plus the bytes of the 24 - L layers dropped after loading.
- a phase a row did not run (`--stop-after-dit` stops before the VAE): taken from the row of the same length
  whose VAE has the same dtype (float32 for the float32, q8 and q4 rows, whose VAE stays float32).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_memory import ANCHORS, TARGET_GB, kv_bytes_at

PRECISION_ORDER = ("float32", "bfloat16", "q8", "q4")
SHOWN = ("lm", "text", "condition", "dit", "vae")
GB = 1e9
SAMPLE_RATE = 48_000


def precision_of(row: dict) -> str:
    return Path(row["model"]).name


def lm_config(row: dict) -> dict:
    return json.loads((Path(row["model"]) / "acestep-5Hz-lm-1.7B" / "config.json").read_text())


def planner_peak(rows: list[dict], seconds: float) -> tuple[int, str] | None:
    """(the planner phase's peak RSS at `seconds`, how it was obtained) from the planner rows."""
    runs = [r for r in rows if "lm" in r["rss"] and r["planner_probes"]]
    if not runs:
        return None
    r = min(runs, key=lambda r: abs(r["seconds"] - seconds))
    prompt = next(p["prompt"] for p in r["planner_probes"] if "prompt" in p)
    decoded = max(p.get("code", 0) for p in r["planner_probes"])
    full = round(seconds * 5)
    cfg = lm_config(r)
    add = kv_bytes_at(cfg, prompt + full) - kv_bytes_at(cfg, prompt + decoded)
    how = f"measured in the {r['seconds']:g} s run ({decoded} of {round(r['seconds'] * 5)} codes decoded, prompt {prompt})"
    if add:
        how += f" + {add / GB:.2f} GB of KV cache for {full} codes (carried)"
    return r["rss"]["lm"] + add, how


def dit_carried(r: dict) -> tuple[int, int, str]:
    """(upper, lower, how) for a DiT phase measured on `layers` of 24. The dropped layers' bytes the allocator
    returned come back in full (lower bound). What it kept stayed resident, and the phase's activations may have
    reused it, hiding them: the upper bound adds the activations (MLX's peak less the kept layers), at most the
    kept bytes."""
    d, measured, layers = r["dropped"], r["rss"]["dit"], r["layers"]
    kept_weights = d["bytes"] * layers // d["layers"]  # the layers are alike
    activations = max(0, r["mlx_peak"]["dit"] - kept_weights)
    hidden = min(activations, d["bytes"] - d["released"])
    low, high = measured + d["released"], measured + d["released"] + hidden
    how = (
        f"carried from {layers} of 24 layers: measured {measured / GB:.2f} GB + {d['released'] / GB:.2f} GB of the "
        f"{d['bytes'] / GB:.2f} GB dropped that the allocator returned = {low / GB:.2f} GB, + up to "
        f"{hidden / GB:.2f} GB of activations the kept memory may have absorbed = {high / GB:.2f} GB"
    )
    return high, low, how


def vae_carried(rows: list[dict], vae_like: str, seconds: float) -> tuple[int, str] | None:
    """The VAE phase's own need at `seconds` from a decode of another length: its windows are the same size at any
    length (256 frames off Metal), so MLX's peak there, plus the longer waveform it returns (float32 stereo at
    48 kHz), plus the process's non-MLX resident set (measured after loading)."""
    donors = [r for r in rows if precision_of(r) == vae_like and "vae" in r["mlx_peak"] and not r["stopped_after_dit"]]
    if not donors:
        return None
    r = donors[0]
    wave = round((seconds - r["seconds"]) * SAMPLE_RATE) * 2 * 4
    value = r["mlx_peak"]["vae"] + wave + r["baseline_rss"]
    how = (
        f"carried: MLX's peak of the {r['seconds']:g} s {vae_like} decode ({r['mlx_peak']['vae'] / GB:.2f} GB) + "
        f"{wave / GB:.2f} GB more waveform + {r['baseline_rss'] / GB:.2f} GB non-MLX resident (not measured: "
        "what earlier phases left with the allocator is in their own figures)"
    )
    return value, how


def phase_peaks(rows: list[dict], precision: str, seconds: float) -> dict[str, tuple[int, str]] | None:
    mine = [r for r in rows if precision_of(r) == precision and r["seconds"] == seconds]
    if not mine:
        return None
    out: dict[str, tuple[int, str]] = {}
    for r in sorted(mine, key=lambda r: r["layers"] or 99, reverse=True):  # full-depth rows first, and they win
        for phase in ("text", "condition", "dit", "vae"):
            if phase in out or phase not in r["rss"] or (phase == "vae" and r["stopped_after_dit"]):
                continue
            value, how = r["rss"][phase], "measured"
            if phase == "dit" and r["layers"] and "released" not in r["dropped"]:
                continue  # a row from before the allocator's return was recorded: its DiT figure cannot be carried
            if phase == "dit" and r["layers"]:
                value, low, how = dit_carried(r)
                out[phase + "_low"] = (low, "")
            if phase == "dit" and r["steps"] != 8:
                how += f" ({r['steps']} step)"
            out[phase] = (value, how)
    if "vae" not in out:  # the VAE stays float32 for the quantized DiTs
        vae_like = "float32" if precision in ("q8", "q4") else precision
        donor = [
            r
            for r in rows
            if precision_of(r) == vae_like
            and r["seconds"] == seconds
            and "vae" in r["rss"]
            and not r["stopped_after_dit"]
        ]
        if donor:
            out["vae"] = (donor[0]["rss"]["vae"], f"the {vae_like} row's VAE phase (same VAE)")
        else:
            carried = vae_carried(rows, vae_like, seconds)
            if carried:
                out["vae"] = carried
    lm = planner_peak(rows, seconds)
    if lm:
        out["lm"] = lm
    return out


def _cell(peaks: dict, phase: str) -> str:
    if phase not in peaks:
        return "-"
    low = peaks.get(phase + "_low")
    return f"{low[0] / GB:.2f}-{peaks[phase][0] / GB:.2f}" if low else f"{peaks[phase][0] / GB:.2f}"


def table(rows: list[dict], songs=(30.0, 240.0)) -> str:
    lines = [
        "| DiT | song | " + " | ".join(f"{p} (GB)" for p in SHOWN) + " | run peak (GB) | target |",
        "|---|---|" + "---|" * (len(SHOWN) + 2),
    ]
    notes = []
    for precision in PRECISION_ORDER:
        for seconds in songs:
            peaks = phase_peaks(rows, precision, seconds)
            if not peaks:
                continue
            cells = [_cell(peaks, p) for p in SHOWN]
            total = max(v for p, (v, _) in peaks.items() if not p.endswith("_low"))
            complete = all(p in peaks for p in SHOWN)  # the run's peak takes each range's upper end
            target = (
                f"< {TARGET_GB:g} GB: {'met' if total < TARGET_GB * GB else 'MISSED'}"
                if seconds == 240 and precision == "q8"
                else ""
            )
            lines.append(
                f"| {precision} | {seconds:g} s | "
                + " | ".join(cells)
                + f" | {'' if complete else '>= '}{total / GB:.2f} | {target} |"
            )
            notes += [f"- {precision} {seconds:g} s, {p}: {peaks[p][1]}" for p in SHOWN if p in peaks]
    return "\n".join(lines + ["", f"Anchors: {ANCHORS}.", "", *notes])
