"""Golden prompts and codes of the planner's codes phase in its current form (upstream PRs #1127/#1128, April 2026:
the assistant turn left open, the codes after `</think>\\n\\n`, the unconditional branch a bare `NO USER INPUT`
with an empty think block), from the reference's `LLMHandler.build_formatted_prompt_with_cot` and
`_generate_with_cfg_custom` (`acestep/llm_inference.py`) on the tiny fixture LM."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CAPTION = "A calm piano ballad with soft strings."
LYRICS = "[verse]\nla la la\n"
META = {
    "bpm": 96,
    "caption": "warm piano",
    "duration": 4,
    "keyscale": "D minor",
    "language": "en",
    "timesignature": "3",
}
FORMS = {"current": False, "legacy_uncond": True}  # upstream's use_legacy_cfg_prompt toggle
NEGATIVES = {"default": "NO USER INPUT", "negative": "harsh noise"}
CFG_SCALE = 2.0


def planner_cases(root: Path, fixtures: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    import torch
    from acestep.constrained_logits_processor import MetadataConstrainedLogitsProcessor
    from upstream_planner_tasks import reference_handler

    handler = reference_handler(root, fixtures)
    tok = handler.llm_tokenizer
    cot = handler._format_metadata_as_cot(META)
    cases = {}
    for form, legacy in FORMS.items():
        handler.use_legacy_cfg_prompt = legacy
        for label, negative in NEGATIVES.items():
            cond = handler.build_formatted_prompt_with_cot(CAPTION, LYRICS, cot)
            uncond = handler.build_formatted_prompt_with_cot(
                CAPTION, LYRICS, cot, is_negative_prompt=True, negative_prompt=negative
            )
            meta = {
                "component": "planner:codes_prompt",
                "reference_entry_point": "LLMHandler.build_formatted_prompt_with_cot(caption, lyrics, "
                "_format_metadata_as_cot(meta)[, is_negative_prompt=True, negative_prompt]) with "
                f"use_legacy_cfg_prompt={legacy}",
                "args": {"caption": CAPTION, "lyrics": LYRICS, "meta": META, "negative": negative, "form": form},
                "prompts": {"cond": cond, "uncond": uncond},
            }
            tensors = {
                "out.cond_ids": np.array(tok.encode(cond), np.int64),
                "out.uncond_ids": np.array(tok.encode(uncond), np.int64),
            }
            cases[f"planner_prompt_{form}_{label}"] = (meta, tensors)
    handler.use_legacy_cfg_prompt = False
    for label, negative in NEGATIVES.items():
        cond_ids, uncond_ids = (cases[f"planner_prompt_current_{label}"][1][f"out.{k}_ids"] for k in ("cond", "uncond"))
        n_codes = int(META["duration"] * 5)
        processor = MetadataConstrainedLogitsProcessor(tok, enabled=True)
        processor.reset()
        processor.set_target_duration(META["duration"])
        processor.set_generation_phase("codes")
        width = max(len(cond_ids), len(uncond_ids))
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in (cond_ids, uncond_ids)])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in (cond_ids, uncond_ids)])
        out = handler._generate_with_cfg_custom(
            ids, mask, n_codes + 1, 0.0, CFG_SCALE, None, None, 1.0, pad, None, processor
        )
        new = out[0, width:].numpy()
        meta = {
            "component": "planner:codes_cfg_greedy",
            "reference_entry_point": "LLMHandler._generate_with_cfg_custom([cond, uncond] left padded, "
            f"max_new_tokens={n_codes + 1}, temperature=0, cfg_scale={CFG_SCALE}, codes-phase "
            "MetadataConstrainedLogitsProcessor(target_duration))",
            "args": {"cfg_scale": CFG_SCALE, "n_codes": n_codes, "negative": negative},
        }
        tensors = {
            "in.cond_ids": cond_ids,
            "in.uncond_ids": uncond_ids,
            "out.tokens": new.astype(np.int64),
        }
        cases[f"planner_codes_greedy_{label}"] = (meta, tensors)
    return cases
