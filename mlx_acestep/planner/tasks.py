"""The planner's text tasks, as upstream's `acestep/llm_inference.py` runs them: create a song from one sentence
(`create_sample_from_query`, :2042), tidy a user's caption and lyrics (`format_sample_from_input`, :2216) and describe
audio codes (`understand_audio_from_codes`, :1850).

Each is one chat prompt (`build_formatted_prompt_for_inspiration` :1988, `_for_format` :2164, `_for_understanding`
:1802: a system instruction from `acestep/constants.py`:121-123, the user's text, the generation prompt), no
classifier-free guidance, the answer decoded by `understand.write_task` and read back as upstream reads it
(`parse_lm_output` :2792, `_extract_lyrics_from_output` :1950). The `SongSheet` keeps only valid values: a field
the answer leaves out or garbles is None, and a value the user fixed is kept verbatim.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import mlx.core as mx
import numpy as np

from ..conditioning.prompts import LANGUAGES
from ..limits import BPM, CAPTION_TOKENS, LYRIC_TOKENS, PLANNER_SECONDS
from ..names import INSTRUMENTAL, KEYSCALES, NO_USER_INPUT, TIME_SIGNATURES
from .lm import CODES_PER_SECOND, chat, drawer, stepper
from .understand import TaskConstraint, write_task

TASKS = ("create", "format", "understand")
INSTRUCTIONS = {  # acestep/constants.py:121-123
    "understand": "Understand the given musical conditions and describe the audio semantics accordingly:",
    "create": "Expand the user's input into a more detailed and specific musical description:",
    "format": "Format the user's input into a more detailed and specific musical description:",
}
TEMPERATURES = {"create": 0.85, "format": 0.85, "understand": 0.3}  # upstream's defaults per task
# Upstream's token budget without a target duration (`_compute_max_new_tokens`): the longest song's codes and 500.
MAX_TOKENS = PLANNER_SECONDS[1] * CODES_PER_SECOND + 500
FIELDS = ("caption", "lyrics", "bpm", "keyscale", "timesignature", "duration", "language")


def task_prompt(task: str, text: str) -> str:
    return chat(f"# Instruction\n{INSTRUCTIONS[task]}\n\n", text)


def create_input(query: str, instrumental: bool) -> str:
    return f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}"


def format_input(caption: str, lyrics: str) -> str:
    return f"# Caption\n{caption}\n\n# Lyric\n{lyrics}"


def codes_input(codes) -> str:
    return "".join(f"<|audio_code_{int(c)}|>" for c in codes)


@dataclass
class SongSheet:
    """What the planner wrote about a song: caption, lyrics and metadata (None where it wrote no valid value).
    `codes`: the 5 Hz audio codes it listened to (understand); `text`: its whole answer as written."""

    task: str
    caption: str = ""
    lyrics: str = ""
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: str | None = None
    duration: int | None = None
    language: str | None = None
    instrumental: bool | None = None  # create: the flag it was given
    codes: np.ndarray | None = None
    text: str = ""
    seed: int = 0
    seconds: float = 0.0
    tokens: list[int] = field(default_factory=list, repr=False)  # the answer's token ids

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["tokens"]
        out["codes"] = None if self.codes is None else [int(c) for c in self.codes]
        return out

    def metadata(self) -> dict:
        """The fields a render takes (None where the planner wrote none)."""
        return {k: getattr(self, k) for k in FIELDS}


def parse_answer(text: str) -> dict:
    """The metadata of an answer, as upstream's `parse_lm_output` reads it (its codes aside): the first
    `<think>...</think>` block, else the text before any audio code; a line without leading space holding ':' starts a
    field, indented lines continue it, lines starting '<' are skipped; bpm and duration ints where they parse."""
    match = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    body = match.group(1).strip() if match else ""
    if not body:
        body = text.split("<|audio_code_")[0].strip()
    meta, key, lines = {}, None, []

    def save():
        if not key or not lines:
            return
        value = "\n".join(lines)
        if key in ("bpm", "duration"):
            try:
                meta[key] = int(value.strip())
            except ValueError:
                meta[key] = value.strip()
        elif key == "caption":  # YAML wrapping undone: each line stripped, joined by spaces
            meta[key] = " ".join(line.strip() for line in value.split("\n") if line.strip())
        elif key in ("genres", "keyscale", "language", "timesignature"):
            meta[key] = value.strip()

    for line in body.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            save()
            name, first = line.split(":", 1)
            key, lines = name.strip().lower(), [first] if first.strip() else []
        elif line.startswith((" ", "\t")) and key:
            lines.append(line)
    save()
    return meta


def answer_lyrics(text: str) -> str:
    """The lyrics of an answer (upstream's `_extract_lyrics_from_output`): what follows the first `</think>`, without
    a leading `# Lyric(s)` header or a trailing `<|im_end|>`."""
    if "</think>" not in text:
        return ""
    after = text.split("</think>", 1)[1].strip()
    after = re.sub(r"^#\s*Lyri[c|cs]?\s*\n", "", after, flags=re.IGNORECASE)
    return re.sub(r"<\|im_end\|>\s*$", "", after).strip()


def _valid(meta: dict) -> dict:
    """The values of a parsed answer that a render can take; the rest None."""

    def number(value, lo, hi):
        try:
            number = int(value)
        except (TypeError, ValueError):
            return None
        return number if lo <= number <= hi else None

    return {
        "caption": meta.get("caption", ""),
        "bpm": number(meta.get("bpm"), *BPM),
        "duration": number(meta.get("duration"), PLANNER_SECONDS[0], PLANNER_SECONDS[1]),
        "keyscale": meta.get("keyscale") if meta.get("keyscale") in KEYSCALES else None,
        "language": meta.get("language") if meta.get("language") in LANGUAGES else None,
        "timesignature": meta.get("timesignature") if meta.get("timesignature") in TIME_SIGNATURES else None,
    }


def _user(**given) -> dict:
    """The values a user fixed, as upstream passes them to its constraint (a bpm or duration above 0, texts given)."""
    out = {}
    for name, value in given.items():
        if name in ("bpm", "duration"):
            value = int(value) if value is not None and int(value) > 0 else None
        elif value is not None and str(value).strip().lower() in ("", "unknown"):
            value = None
        if value is not None:
            out[name] = value if name in ("bpm", "duration") else str(value).strip()
    return out


def run_task(
    planner,
    task: str,
    text: str,
    user: dict,
    *,
    skip_language=False,
    temperature=None,
    top_p=1.0,
    top_k=0,
    seed=0,
    max_tokens=None,
    max_duration=PLANNER_SECONDS[1],
    callback=None,
    check=None,
) -> tuple[str, list[int]]:
    """(the answer as text, its tokens) to `text` under `task`'s instruction; `max_tokens` None: `MAX_TOKENS`."""
    if getattr(planner, "_task_constraint", None) is None:  # built once per planner (it decodes the vocabulary)
        planner._task_constraint = TaskConstraint(planner.constraint)
    tc = planner._task_constraint
    temperature = TEMPERATURES[task] if temperature is None else temperature
    step = stepper(planner.lm, planner.tokenizer.encode(task_prompt(task, text)), check)
    trees = {**tc.metadata.trees, "duration": tc.metadata.limit_duration(max_duration).trees["duration"]}
    draw = drawer(temperature, top_p, mx.random.key(seed), top_k)
    limit = MAX_TOKENS if max_tokens is None else max_tokens
    tokens = write_task(step, tc, user, draw, limit, skip_language, callback, trees)
    return planner.tokenizer.decode(tokens), tokens


def _sheet(task: str, answer: tuple, user: dict, lyrics: str, start: float, seed: int, **extra) -> SongSheet:
    text, tokens = answer
    values = _valid(parse_answer(text)) | user
    sheet = SongSheet(task, lyrics=answer_lyrics(text) or lyrics, text=text, seed=seed, tokens=tokens, **extra)
    for name, value in values.items():
        setattr(sheet, name, value)
    sheet.seconds = time.perf_counter() - start
    return sheet


def create_sample(planner, query: str = "", instrumental: bool = False, language: str | None = None, **options):
    """A song from one sentence (an empty one: upstream's `NO USER INPUT`, the LM invents it); `language` forces
    the language it writes (None or "unknown": its choice). `options`: `run_task`'s."""
    start = time.perf_counter()
    query = planner.fit(query, CAPTION_TOKENS, "query") if query.strip() else NO_USER_INPUT
    user = _user(language=language)
    answer = run_task(planner, "create", create_input(query, instrumental), user, **options)
    lyrics = INSTRUMENTAL if instrumental else ""
    return _sheet("create", answer, user, lyrics, start, options.get("seed", 0), instrumental=instrumental)


def format_sample(
    planner,
    caption: str,
    lyrics: str,
    *,
    bpm=None,
    duration=None,
    keyscale=None,
    timesignature=None,
    language=None,
    **options,
) -> SongSheet:
    """The user's caption and lyrics tidied into the form the DiT was trained on; the values given are kept (a
    language given is not written into the answer at all, as upstream skips it)."""
    start = time.perf_counter()
    caption = planner.fit(caption, CAPTION_TOKENS, "caption") if caption.strip() else NO_USER_INPUT
    lyrics = planner.fit(lyrics, LYRIC_TOKENS, "lyrics") if lyrics.strip() else INSTRUMENTAL
    user = _user(bpm=bpm, duration=duration, keyscale=keyscale, timesignature=timesignature, language=language)
    answer = run_task(
        planner, "format", format_input(caption, lyrics), user, skip_language="language" in user, **options
    )
    return _sheet("format", answer, user, lyrics, start, options.get("seed", 0))


def understand_codes(planner, codes, **options) -> SongSheet:
    """What the planner hears in 5 Hz audio codes: caption, lyrics, metadata."""
    start = time.perf_counter()
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    answer = run_task(planner, "understand", codes_input(codes) if codes.size else NO_USER_INPUT, {}, **options)
    return _sheet("understand", answer, {}, "", start, options.get("seed", 0), codes=codes)
