"""Golden prompts and greedy outputs of the planner's three text tasks (`create_sample_from_query`,
`format_sample_from_input`, `understand_audio_from_codes` in `acestep/llm_inference.py`) on the tiny fixture LM, and
understand end to end: the February fixture's VAE encode of a short clip (the reference's diffusers VAE; its own
`eps`), the reference DiT's FSQ tokenizer (`AceStepConditionGenerationModel.tokenize`, as
`convert_src_audio_to_codes` calls it), then the LM.

Greedy is the reference's temperature 0 (`_sample_tokens`: argmax after its constraint). The reference runs without
`genres_vocab.txt` (its blob is missing from every mirror of upstream): its genres field then takes any token but a
newline first and ends where a newline is the likeliest token. `max_new_tokens` is cut to `MAX_NEW_TOKENS` (the
reference's own, 3500 here, is recorded) so the tests stay fast.

The random LM rambles in its caption and never reaches the later fields, so the `steered` cases add `STEER` to the
logit of the next token of a script (a well-formed answer) wherever what was written so far is a prefix of it: the
constraint then decides what is written (a script's token it forbids is not written, and the script is left).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MAX_NEW_TOKENS = 160
QUERY = "a melancholic folk song about leaving home, female vocals"
CAPTION = "lofi hip hop, rainy night, soft keys"
LYRICS = "[verse]\nwalking home in the rain\n[chorus]\nla la la"
CREATE = {  # label -> (query, instrumental, vocal_language, max_new_tokens)
    "create_query": (QUERY, False, None, MAX_NEW_TOKENS),
    "create_instrumental_fr": (QUERY, True, "fr", MAX_NEW_TOKENS),
    "create_empty": ("", False, "unknown", MAX_NEW_TOKENS),
}
FORMAT = {  # label -> (caption, lyrics, user_metadata)
    "format_plain": (CAPTION, LYRICS, None),
    "format_bpm_key": (CAPTION, LYRICS, {"bpm": 90, "keyscale": "D minor"}),
    "format_all": (
        CAPTION,
        "",
        {"bpm": 120, "duration": 45, "keyscale": "F# minor", "timesignature": "3", "language": "ja"},
    ),
}


STEER = 20.0
STEERED = {  # label -> (task, its input, user values, script)
    "steered_create_fr": (
        "create",
        (QUERY, False, "fr"),
        "<think>\nbpm: 96\ncaption: A wistful folk song with\n  fingerpicked guitar.\nkeyscale: D minor\n"
        "language: fr\ntimesignature: 3\n</think>\n\n# Lyric\n[verse]\nla la la<|im_end|>",
    ),
    "steered_format_genres": (
        "format",
        (CAPTION, LYRICS, {"bpm": 90}),
        "<think>\nbpm: 90\ncaption: Lofi hip hop.\nduration: 75\ngenres: lofi hip hop\n"
        "keyscale: A minor\nlanguage: en\ntimesignature: 4\n</think>\n\nla<|im_end|>",
    ),
    "steered_format_all": (
        "format",
        (CAPTION, LYRICS, FORMAT["format_all"][2]),
        "<think>\nbpm: 120\ncaption: Calm.\nkeyscale: F# minor\ntimesignature: 3\n</think>\n\nla<|im_end|>",
    ),
    "steered_create_mood": (  # a field upstream does not know ends the caption: the next field's name follows
        "create",
        ("", False, None),
        "<think>\nbpm: 70\ncaption: Soft rain.\nmood: calm\n",
    ),
    "steered_understand": (
        "understand",
        None,
        "<think>\nbpm: 128\ncaption: An upbeat pop song.\nlanguage: ko\ntimesignature: 4\n</think>\n\n"
        "[chorus]\noh oh<|im_end|>",
    ),
}


def steer_target(tokenizer, script: str, generated: list[int]) -> int | None:
    """The script's next token where the answer so far is a prefix of it, else None."""
    text = tokenizer.decode(generated)
    if len(text) < len(script) and script.startswith(text):
        return tokenizer.encode(script[len(text) :], add_special_tokens=False)[0]
    return None


def reference_handler(root: Path, fixtures: Path):
    """The reference's `LLMHandler` over the tiny fixture LM on the PyTorch path, initialised as its `initialize`
    leaves it (constraint processor included), its logits cut to the tokenizer's length."""
    sys.path.insert(0, str(root))
    import torch
    from acestep.constrained_logits_processor import MetadataConstrainedLogitsProcessor
    from acestep.llm_inference import LLMHandler
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    folder = fixtures / "checkpoints" / "acestep-5Hz-lm-0.6B"
    handler = LLMHandler()
    handler.llm_tokenizer = AutoTokenizer.from_pretrained(str(folder))
    handler.llm = Qwen3ForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    handler.disable_tqdm = True
    handler.llm_initialized, handler.llm_backend = True, "pt"
    tok = handler.llm_tokenizer
    forward = handler._forward_pass

    def trimmed(*args, **kwargs):
        # The tiny LM's embedding is padded past the tokenizer (2661 rows, 2586 tokens); the processor's masks are
        # the tokenizer's length. The padded rows are no code, so the codes phase never picks them either way.
        out = forward(*args, **kwargs)
        out.logits = out.logits[..., : len(tok)]
        generated, past = args[1], args[3]
        if past is None:
            handler.start = generated.shape[1]
        if handler.script is not None:
            target = steer_target(tok, handler.script, generated[0, handler.start :].tolist())
            if target is not None:
                out.logits[0, -1, target] += STEER
        return out

    handler._forward_pass = trimmed
    handler.script, handler.start = None, 0
    # `initialize` builds it with the GPU tier's longest duration; 600 s (the constant's) is every tier's at the top
    handler.constrained_processor = MetadataConstrainedLogitsProcessor(tok, enabled=True, max_duration=600)
    return handler


class _Recorder:
    """What the reference's generation loop was given and wrote: the prompt ids and the new tokens."""

    def __init__(self, handler):
        self.handler, self.calls = handler, []
        loop = handler._generate_with_constrained_decoding

        def spy(input_ids, *args, **kwargs):
            out = loop(input_ids, *args, **kwargs)
            self.calls.append((input_ids[0].numpy(), out[0, input_ids.shape[1] :].numpy()))
            return out

        handler._generate_with_constrained_decoding = spy

    def limit(self, max_new_tokens: int | None) -> int:
        handler = self.handler
        own = type(handler)._compute_max_new_tokens.__get__(handler)
        handler._compute_max_new_tokens = own if max_new_tokens is None else lambda *a, **k: max_new_tokens
        return own(None, "understand", fallback_max=getattr(handler.llm.config, "max_new_tokens", 4096))

    def case(self, component: str, entry: str, args: dict, metadata: dict, extra=None):
        prompt_ids, tokens = self.calls.pop()
        assert not self.calls
        meta = {
            "component": component,
            "reference_entry_point": entry,
            "args": args,
            "metadata": {k: v for k, v in metadata.items()},
            "text": self.handler.llm_tokenizer.decode(tokens, skip_special_tokens=False),
        }
        tensors = {"in.prompt_ids": prompt_ids.astype(np.int64), "out.tokens": tokens.astype(np.int64)}
        return meta, {**tensors, **(extra or {})}


def planner_task_cases(root: Path, fixtures: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    handler = reference_handler(root, fixtures)
    rec = _Recorder(handler)
    cases = {}
    for label, (query, instrumental, language, limit) in CREATE.items():
        own = rec.limit(limit)
        metadata, _ = handler.create_sample_from_query(
            query, instrumental=instrumental, vocal_language=language, temperature=0.0
        )
        args = {"query": query, "instrumental": instrumental, "language": language, "max_new_tokens": limit}
        args["reference_max_new_tokens"] = own
        entry = "LLMHandler.create_sample_from_query(query, instrumental, vocal_language, temperature=0.0)"
        cases[f"planner_task_{label}"] = rec.case("planner:create_sample", entry, args, metadata)
    for label, (caption, lyrics, user) in FORMAT.items():
        rec.limit(MAX_NEW_TOKENS)
        metadata, _ = handler.format_sample_from_input(caption, lyrics, user, temperature=0.0)
        args = {"caption": caption, "lyrics": lyrics, "user": user, "max_new_tokens": MAX_NEW_TOKENS}
        entry = "LLMHandler.format_sample_from_input(caption, lyrics, user_metadata, temperature=0.0)"
        cases[f"planner_task_{label}"] = rec.case("planner:format_sample", entry, args, metadata)
    clips = understand_inputs(root, fixtures)
    for label, (codes, extra) in clips.items():
        rec.limit(MAX_NEW_TOKENS)
        metadata, _ = handler.understand_audio_from_codes(codes, temperature=0.0)
        args = {"codes": codes, "max_new_tokens": MAX_NEW_TOKENS}
        entry = (
            "February vae_encode sample -> AceStepConditionGenerationModel.tokenize (convert_src_audio_to_codes) -> "
            "LLMHandler.understand_audio_from_codes(codes, temperature=0.0)"
        )
        cases[f"planner_task_{label}"] = rec.case("planner:understand", entry, args, metadata, extra)
    for label, (task, given, script) in STEERED.items():
        rec.limit(MAX_NEW_TOKENS)
        handler.script = script
        if task == "create":
            metadata, _ = handler.create_sample_from_query(given[0], given[1], given[2], temperature=0.0)
            args = {"query": given[0], "instrumental": given[1], "language": given[2]}
        elif task == "format":
            metadata, _ = handler.format_sample_from_input(*given, temperature=0.0)
            args = {"caption": given[0], "lyrics": given[1], "user": given[2]}
        else:
            metadata, _ = handler.understand_audio_from_codes(clips["understand_clip0"][0], temperature=0.0)
            args = {"codes": clips["understand_clip0"][0]}
        handler.script = None
        args.update(max_new_tokens=MAX_NEW_TOKENS, script=script, steer=STEER)
        entry = f"the {task} task, temperature 0, the LM's logits steered towards the script (+{STEER})"
        cases[f"planner_task_{label}"] = rec.case(f"planner:steered_{task}", entry, args, metadata)
    return cases


def understand_inputs(root: Path, fixtures: Path) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """(codes string, tensors) per clip: each item of the February `vae_encode` case through the reference's FSQ
    tokenizer, as `convert_src_audio_to_codes` runs it (all frames valid)."""
    import json

    import torch
    from safetensors.numpy import load_file
    from upstream_base import reference_model

    model, silence = reference_model(root, fixtures, "turbo")
    case = json.loads((fixtures / "cases.json").read_text())["cases"]["vae_encode"]
    tensors = load_file(str(fixtures / case["file"]))
    out = {}
    for i in range(tensors["in.audio"].shape[0]):
        latents = torch.from_numpy(tensors["out.sample"][i].T.copy())  # [T, 64], mean + std * eps
        with torch.no_grad():
            _, indices, _ = model.tokenize(latents[None], silence, torch.ones(1, latents.shape[0], dtype=torch.bool))
        codes = indices.flatten().tolist()
        extra = {
            "in.audio": tensors["in.audio"][i],
            "in.eps": tensors["out.eps"][i],
            "out.latents": latents.numpy(),
            "out.codes": np.array(codes, np.int64),
        }
        out[f"understand_clip{i}"] = ("".join(f"<|audio_code_{c}|>" for c in codes), extra)
    return out
