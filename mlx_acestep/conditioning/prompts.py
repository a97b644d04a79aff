"""Caption and lyric prompts exactly as the reference builds them (spec 5.1), and their tokenization.

Caption prompt:  "# Instruction\\n{instruction}\\n\\n# Caption\\n{caption}\\n\\n# Metas\\n{metas}<|endoftext|>\\n"
Lyric prompt:    "# Languages\\n{language}\\n\\n# Lyric\\n{lyrics}<|endoftext|>"
Tokenized with the checkpoint's own tokenizer files (transformers, which
mlx-lm already depends on), truncated to 256 / 2048 tokens and right-padded
across the batch with the pad token (mask False).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AceStepError, RequestError
from ..limits import CHARS_PER_TOKEN, DEFAULT_SECONDS
from ..names import INSTRUMENTAL, NEGATIVE_DEFAULT, TRACKS  # noqa: F401  (re-exported for the prompt builders)

INSTRUCTIONS = {
    "text2music": "Fill the audio semantic mask based on the given conditions:",
    "repaint": "Repaint the mask area based on the given conditions:",
    "cover": "Generate audio semantic tokens based on the given conditions:",
    "cover-nofsq": "Generate audio semantic tokens based on the given conditions:",  # cover's, as upstream
}
LANGUAGES = frozenset(
    "ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no pa pl pt ro ru "
    "sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown".split()
)


def instruction(task: str = "text2music", tracks: list[str] | None = None) -> str:
    """The built-in instruction line of a task."""
    names = [t.upper() for t in (tracks or [])]
    for t in tracks or []:
        if t not in TRACKS:
            raise RequestError("track", f"unknown track {t!r} (choose from {', '.join(TRACKS)})")
    if task in INSTRUCTIONS:
        text = INSTRUCTIONS[task]
    elif task == "extract":
        text = f"Extract the {names[0]} track from the audio:" if names else "Extract the track from the audio:"
    elif task == "lego":
        text = (
            f"Generate the {names[0]} track based on the audio context:"
            if names
            else "Generate the track based on the audio context:"
        )
    elif task == "complete":
        text = f"Complete the input track with {' | '.join(names)}:" if names else "Complete the input track:"
    else:
        raise AceStepError(f"unknown task {task!r}")
    return text


@dataclass
class Metas:
    """Song metadata for the `# Metas` block; None prints as N/A."""

    duration: float = DEFAULT_SECONDS
    bpm: int | None = None
    timesignature: int | str | None = None
    keyscale: str | None = None

    def format(self) -> str:
        def value(v):
            return "N/A" if v is None or v == "" else v

        return (
            f"- bpm: {value(self.bpm)}\n- timesignature: {value(self.timesignature)}\n"
            f"- keyscale: {value(self.keyscale)}\n- duration: {int(self.duration)} seconds\n"
        )


def caption_prompt(caption: str, metas: Metas | str | None = None, task_instruction: str | None = None) -> str:
    """The text-encoder prompt. A string `metas` is used verbatim, as the reference allows."""
    metas_text = metas if isinstance(metas, str) else (metas or Metas()).format()
    text = task_instruction if task_instruction is not None else instruction()
    if not text.endswith(":"):  # as the reference: a custom instruction gets its trailing colon
        text += ":"
    return f"# Instruction\n{text}\n\n# Caption\n{caption}\n\n# Metas\n{metas_text}<|endoftext|>\n"


def lego_sft_caption(caption: str, global_caption: str, task_instruction: str, chunk_mask_mode: str) -> str:
    """The caption as upstream's SFT-stems lego checkpoint was trained on it (conditioning_text.py:92-115): the
    song's `global_caption` and the track's own caption, except for a segment ("a segment" in the instruction), whose
    block has the local caption only; "Mask Control" says whether the region is marked (chunk mask mode explicit)."""
    mask = f"Mask Control: {'false' if chunk_mask_mode == 'auto' else 'true'}"
    if "a segment" in task_instruction.lower():
        return f"Local: {caption}\n{mask}"
    return f"Global: {global_caption}\nLocal: {caption}\n{mask}"


def lyric_prompt(lyrics: str, language: str = "unknown") -> str:
    """The lyric prompt; an unknown language code falls back to 'unknown'."""
    code = (language or "unknown").strip().lower()
    if code not in LANGUAGES:
        warnings.warn(f"unknown language {language!r}; using 'unknown'", stacklevel=2)
        code = "unknown"
    return f"# Languages\n{code}\n\n# Lyric\n{lyrics}<|endoftext|>"


class PromptTokenizer:
    """The text encoder's tokenizer with the reference's truncation and right padding."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise AceStepError(f"{folder / 'tokenizer.json'}: file not found")
        from transformers import AutoTokenizer  # mlx-lm's tokenizer stack

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            raise AceStepError(f"{folder}: the tokenizer defines no pad token")

    def encode(self, text: str, max_tokens: int) -> list[int]:
        text = text[: max_tokens * CHARS_PER_TOKEN]  # the tokens past the cap are dropped anyway
        ids = self.tokenizer(text, truncation=False)["input_ids"]
        if len(ids) > max_tokens:
            warnings.warn(f"prompt is {len(ids)} tokens; truncated to {max_tokens}", stacklevel=3)
            ids = self.tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]
        return ids

    def batch(self, texts: list[str], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids `[B, L]` int32, mask `[B, L]` bool), right-padded to the longest item."""
        if not texts:
            raise AceStepError("no prompts to tokenize")
        rows = [self.encode(t, max_tokens) for t in texts]
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), length), dtype=bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = True
        return ids, mask
