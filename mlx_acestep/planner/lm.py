"""The planner's prompts and its audio-code phase (spec 8.2, 8.4 phase 2, 8.5).

Phase 2 writes exactly `int(duration * 5)` audio codes under classifier-free
guidance against the reference's unconditional prompt, [cond, uncond] in one
batched forward per token. The codes-only mask makes the length known in
advance, so the loop never reads a token back to the host: each step's token
feeds the next forward as an array, and MLX evaluates a step ahead
(`mx.async_eval`), as mlx-lm's generator does.

The code token range comes from the LM's tokenizer (`<|audio_code_N|>` ids,
contiguous): the real LM has 64000 codes, the tiny fixture LM 2048.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import AceStepError
from ..limits import (
    CAPTION_TOKENS,
    CHARS_PER_TOKEN,
    DEFAULT_LM_CFG_SCALE,
    DEFAULT_LM_TEMPERATURE,
    DEFAULT_LM_TOP_P,
    LYRIC_TOKENS,
    PLANNER_SECONDS,
)
from ..models.planner_lm import PlannerLM
from ..names import INSTRUMENTAL, LM_CODES_PROMPTS, NEGATIVE_DEFAULT
from .constraint import FIELDS, MetadataConstraint, write_metadata

SYSTEM_GENERATE = "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
CODES_PER_SECOND = 5
_CODE = re.compile(r"<\|audio_code_(\d+)\|>")


def chat(system: str, user: str, think: str | None = None, closed: bool = True) -> str:
    """Qwen3's chat template as the reference renders it.

    Without `think`: system + user + the generation prompt (phase 1). With it, the assistant turn begins
    `<think>\\n{think}\\n</think>\\n\\n` (an empty `think` gives `<think>\\n\\n</think>`, as the template
    renders empty reasoning); `closed` ends it with `<|im_end|>\\n` as the template renders a finished message
    (the February codes prompt), otherwise it stays open for the codes to follow (upstream's since April 2026).
    """
    text = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    if think is None:
        return text
    text += f"<think>\n{think.strip(chr(10))}\n</think>\n\n"
    return text + "<|im_end|>\n" if closed else text


def metadata_yaml(meta: dict) -> str:
    """The think block's body: keys sorted, digit strings as ints, `N/4` time signatures as `N`, PyYAML's wrapping."""
    import yaml  # mlx-lm's dependency

    clean = {}
    for k, v in meta.items():
        if v is None or v == "":
            continue
        if k == "timesignature" and isinstance(v, str) and v.endswith("/4"):
            v = v[:-2]
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        clean[k] = v
    return yaml.dump(clean, allow_unicode=True, sort_keys=True).strip("\n")


def user_turn(caption: str, lyrics: str) -> str:
    return f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"


def think_prompt(caption: str, lyrics: str) -> str:
    """Phase 1: the generation prompt; the LM continues with its `<think>` block."""
    return chat(SYSTEM_GENERATE, user_turn(caption, lyrics))


def codes_prompts(
    caption: str, lyrics: str, meta: dict, negative: str = NEGATIVE_DEFAULT, form: str = "current"
) -> tuple[str, str]:
    """(conditional, unconditional) phase-2 prompts in one of `LM_CODES_PROMPTS` (llm_inference.py:1716-1800).

    current: the assistant turn open after the think block; the unconditional user turn is the bare negative
    prompt ("NO USER INPUT" unless one means something), as the planner was trained with CFG dropout.
    legacy-uncond: the same turn, but the unconditional user keeps the caption (the negative one if it means
    something) and the lyrics. february: legacy-uncond's user turns with the turn closed by `<|im_end|>`.
    Every unconditional branch has an empty think block."""
    if form not in LM_CODES_PROMPTS:
        raise AceStepError(f"unknown codes prompt {form!r} (choose {', '.join(LM_CODES_PROMPTS)})")
    user = user_turn(caption, lyrics)
    meaningful = negative.strip() and negative.strip() != NEGATIVE_DEFAULT
    if form == "current":
        uncond_user = negative if meaningful else NEGATIVE_DEFAULT
    else:
        uncond_user = user_turn(negative, lyrics) if meaningful else user
    closed = form == "february"
    return (
        chat(SYSTEM_GENERATE, user, metadata_yaml(meta), closed),
        chat(SYSTEM_GENERATE, uncond_user, "", closed),
    )


@dataclass(frozen=True)
class CodeTokens:
    first_id: int  # token id of <|audio_code_0|>
    count: int  # number of codes (contiguous ids)
    eos_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> CodeTokens:
        codes = {int(m.group(1)): i for t, i in tokenizer.get_vocab().items() if (m := _CODE.fullmatch(t))}
        if not codes or 0 not in codes:
            raise AceStepError("the LM tokenizer has no <|audio_code_N|> tokens")
        first, count = codes[0], len(codes)
        if any(codes.get(n) != first + n for n in range(count)):
            raise AceStepError("the LM tokenizer's audio-code tokens are not contiguous ids 0..N-1")
        if tokenizer.eos_token_id is None:
            raise AceStepError("the LM tokenizer defines no eos token")
        return cls(first, count, tokenizer.eos_token_id)

    def limit(self, codebook_size: int | None) -> CodeTokens:
        """Only codes below the DiT's codebook size (the real LM has 65535 code tokens for 64000 codes)."""
        if codebook_size is None or codebook_size >= self.count:
            return self
        return CodeTokens(self.first_id, codebook_size, self.eos_id)


def load_planner_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer  # mlx-lm's tokenizer stack

    if not (Path(folder) / "tokenizer.json").is_file():
        raise AceStepError(f"{Path(folder) / 'tokenizer.json'}: file not found")
    return AutoTokenizer.from_pretrained(str(folder))


def filter_top_p(logits: mx.array, top_p: float) -> mx.array:
    """Keep the most probable tokens whose cumulative probability first reaches `top_p` (at least one)."""
    if top_p >= 1.0:
        return logits
    probs = mx.softmax(logits, axis=-1)
    ordered = mx.sort(probs, axis=-1)[..., ::-1]
    before = mx.cumsum(ordered, axis=-1) - ordered  # mass of the strictly more probable tokens
    kept = mx.where(before < top_p, ordered, mx.inf)
    threshold = mx.min(kept, axis=-1, keepdims=True)
    return mx.where(probs >= threshold, logits, -mx.inf)


def filter_top_k(logits: mx.array, top_k: int) -> mx.array:
    """Keep the `top_k` likeliest tokens, ties with the last one too (upstream's `_apply_top_k_filter`; 0: all)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = mx.sort(logits, axis=-1)[..., -top_k, None]
    return mx.where(logits >= kth, logits, -mx.inf)


def sample(logits: mx.array, temperature: float, top_p: float, key: mx.array, top_k: int = 0) -> mx.array:
    """The reference's order (PT loop, llm_inference.py:2581-2585): top-k, top-p on the untempered softmax, then
    temperature, then a draw; temperature 0 = argmax."""
    if temperature <= 0:
        return mx.argmax(logits, axis=-1)
    return mx.random.categorical(filter_top_p(filter_top_k(logits, top_k), top_p) / temperature, key=key)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[mx.array, mx.array]:
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = r
        mask[i, length - len(r) :] = True
    return mx.array(ids), mx.array(mask)


def generate_codes(
    lm: PlannerLM,
    cond_ids: list[int],
    uncond_ids: list[int],
    n_codes: int,
    codes: CodeTokens,
    pad_id: int,
    cfg_scale: float = DEFAULT_LM_CFG_SCALE,
    temperature: float = DEFAULT_LM_TEMPERATURE,
    top_p: float = DEFAULT_LM_TOP_P,
    seed: int = 0,
    callback=None,
    top_k: int = 0,
) -> np.ndarray:
    """Exactly `n_codes` code values (0..count-1) for one song; `cfg_scale` 1 runs the conditional row alone."""
    from mlx_lm.models.cache import make_prompt_cache

    if n_codes < 1:
        raise AceStepError(f"the codes phase needs at least one code, got {n_codes}")
    guided = cfg_scale != 1.0
    ids, key_mask = left_pad([cond_ids, uncond_ids] if guided else [cond_ids], pad_id)
    rows = ids.shape[0]
    key_mask = key_mask if guided else None  # one row has no padding: mlx-lm's own causal mask serves
    cache = make_prompt_cache(lm)
    # Only code tokens may be drawn (EOS only after the last one, where the loop stops): the head computes
    # just their rows, and a draw's index is the code value. Masked rows would add nothing to the softmax.
    head = lm.head(codes.first_id, codes.first_id + codes.count)
    key = mx.random.key(seed)
    logits = head(lm.hidden(ids, cache, key_mask)[:, -1])
    values = []
    for i in range(n_codes):
        scores = logits.astype(mx.float32)
        scores = scores[1] + cfg_scale * (scores[0] - scores[1]) if guided else scores[0]
        key, draw = mx.random.split(key)
        value = sample(scores, temperature, top_p, draw, top_k)
        values.append(value)
        if i == n_codes - 1:
            break  # the reference then forces EOS: nothing more to compute
        if key_mask is not None:
            key_mask = mx.concatenate([key_mask, mx.ones((rows, 1), mx.bool_)], axis=1)
        token = mx.broadcast_to((value + codes.first_id).reshape(1, 1), (rows, 1))
        logits = head(lm.hidden(token, cache, key_mask)[:, -1])
        mx.async_eval(logits, value)
        if callback is not None:
            callback(i + 1, n_codes)
    values = np.array(mx.stack(values)).astype(np.int64)
    if callback is not None:
        callback(n_codes, n_codes)
    return values


def stepper(lm: PlannerLM, prompt: list[int], check=None):
    """`step(ids) -> logits [vocab]` (float32) of the last position after feeding `ids`, the prompt with the first
    call (one KV cache). `check()` runs before every forward (it raises to stop: the pipeline's cancellation)."""
    from mlx_lm.models.cache import make_prompt_cache

    cache, head, pending = make_prompt_cache(lm), lm.head(), list(prompt)

    def step(new: list[int]) -> mx.array:
        nonlocal pending
        if check is not None:
            check()
        logits = head(lm.hidden(mx.array([pending + list(new)]), cache)[0, -1]).astype(mx.float32)  # the last row
        pending = []
        return logits

    return step


def drawer(temperature: float, top_p: float, key: mx.array, top_k: int = 0):
    """`draw(scores) -> int`: one token by `sample`, each draw from the next split of `key`."""

    def draw(scores: mx.array) -> int:
        nonlocal key
        key, sub = mx.random.split(key)
        return int(sample(scores, temperature, top_p, sub, top_k).item())

    return draw


# -- the whole planner -----------------------------------------------------------------------------

# Phase 1 is skipped when the user gave all of these (the reference's `has_all_metas`).
ALL_METAS = ("bpm", "keyscale", "timesignature", "duration")


@dataclass
class Plan:
    codes: np.ndarray  # [int(duration * 5)] code values
    metadata: dict  # the fields phase 2 was conditioned on (bpm, caption, duration, keyscale, language, timesignature)
    think: str  # phase 1's block as written; "" when the user gave every field and it was skipped
    seconds: dict  # {"think": s, "codes": s}


class Planner:
    """The 5 Hz LM planner over a converted LM folder: metadata reasoning, then audio codes."""

    def __init__(self, lm: PlannerLM, tokenizer, codebook_size: int | None = None):
        """`codebook_size`: the DiT's FSQ codebook (codes at or above it are never written)."""
        self.lm, self.tokenizer = lm, tokenizer
        self.codes = CodeTokens.from_tokenizer(tokenizer).limit(codebook_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.codes.eos_id
        self._constraint = None

    @classmethod
    def load(cls, folder: str | Path, codebook_size: int | None = None) -> Planner:
        from ..loading import load_component

        return cls(load_component(folder, "lm"), load_planner_tokenizer(folder), codebook_size)

    def fit(self, text: str, max_tokens: int, what: str) -> str:
        """`text` cut to `max_tokens` of this tokenizer (characters first: see limits.CHARS_PER_TOKEN)."""
        cut = text[: max_tokens * CHARS_PER_TOKEN]
        ids = self.tokenizer.encode(cut, add_special_tokens=False)
        if len(ids) <= max_tokens and len(cut) == len(text):
            return text
        warnings.warn(f"the planner reads the first {max_tokens} tokens of the {what}; the rest is cut", stacklevel=4)
        return self.tokenizer.decode(ids[:max_tokens])

    @property
    def constraint(self):
        if self._constraint is None:  # built on first use: it decodes the whole vocabulary once
            self._constraint = MetadataConstraint(self.tokenizer, self.lm.args.vocab_size)
        return self._constraint

    def think(
        self,
        caption: str,
        lyrics: str,
        user: dict,
        temperature: float = DEFAULT_LM_TEMPERATURE,
        top_p: float = DEFAULT_LM_TOP_P,
        seed: int = 0,
        max_duration: int = PLANNER_SECONDS[1],
        check=None,
        top_k: int = 0,
    ):
        """Phase 1: the constrained `<think>` block (a `ThinkResult`); `user` fields are forced. `check()` runs
        before every forward (it raises to stop: the pipeline's cancellation)."""
        ids = self.tokenizer.encode(think_prompt(caption, lyrics))
        key = mx.random.split(mx.random.key(seed))[1]  # apart from the codes phase's stream
        step, draw = stepper(self.lm, ids, check), drawer(temperature, top_p, key, top_k)
        return write_metadata(step, self.constraint.limit_duration(max_duration), user, draw)

    def plan(
        self,
        caption: str,
        lyrics: str = INSTRUMENTAL,
        *,
        duration: float | None = None,
        bpm: int | None = None,
        keyscale: str | None = None,
        timesignature: int | str | None = None,
        language: str | None = None,
        cfg_scale: float = DEFAULT_LM_CFG_SCALE,
        temperature: float = DEFAULT_LM_TEMPERATURE,
        top_p: float = DEFAULT_LM_TOP_P,
        top_k: int = 0,
        negative: str = NEGATIVE_DEFAULT,
        codes_prompt: str = "current",
        seed: int = 0,
        max_duration: int = PLANNER_SECONDS[1],
        callback=None,
        check=None,
    ) -> Plan:
        """Metadata (the fields not given are chosen by the LM) and exactly `int(duration * 5)` codes.

        `duration` None lets the LM choose it (10 to `max_duration` s). `language` None or "unknown" lets it choose.
        The caption and the lyrics are cut to what the DiT reads of them (256 and 2048 tokens), with a warning:
        the reference passes them whole, and a 100 kB caption exhausts memory in its prompt.
        """
        caption = self.fit(caption, CAPTION_TOKENS, "caption")
        lyrics = self.fit(lyrics, LYRIC_TOKENS, "lyrics")
        user = {
            "bpm": bpm,
            "duration": None if duration is None else int(duration),
            "keyscale": keyscale,
            "timesignature": None if timesignature is None else str(timesignature).removesuffix("/4"),
            "language": None if language in (None, "", "unknown") else language,
        }
        seconds = {"think": 0.0}
        start = time.perf_counter()
        if all(user[k] is not None for k in ALL_METAS):
            think, meta = "", {k: user[k] for k in ALL_METAS}
        else:
            result = self.think(caption, lyrics, user, temperature, top_p, seed, max_duration, check, top_k)
            think, meta = result.text, {k: v for k, v in result.metadata.items() if k in FIELDS}
            meta.update({k: v for k, v in user.items() if v is not None})
            seconds["think"] = time.perf_counter() - start
        if "duration" not in meta:
            raise AceStepError(f"the planner wrote no duration: {think!r}")
        n_codes = int((duration if duration is not None else meta["duration"]) * CODES_PER_SECOND)
        cond, uncond = codes_prompts(caption, lyrics, meta, negative, codes_prompt)
        start = time.perf_counter()
        values = generate_codes(
            self.lm,
            self.tokenizer.encode(cond),
            self.tokenizer.encode(uncond),
            n_codes,
            self.codes,
            self.pad_id,
            cfg_scale=cfg_scale,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            callback=callback,
            top_k=top_k,
        )
        seconds["codes"] = time.perf_counter() - start
        return Plan(values, meta, think, seconds)
