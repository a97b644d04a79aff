"""The decoding of the planner's text tasks (create a sample, format a draft, understand audio codes): upstream's
"understand" generation phase (`constrained_logits_processor.py` with `generation_phase="understand"`,
`skip_genres=False`, `stop_at_reasoning=False`), rule for rule, then free text after `</think>`: `__call__` :1568,
`_process_single_sequence` :1743 (caption :1828, genres :1939, language :2013), `update_state` :2139, the fixed
strings `_get_allowed_tokens_for_fixed_string` :1335, the loop `llm_inference.py` `_generate_with_constrained_decoding`
:2522 (an end-of-sequence or pad token stops it).

The block's fields in upstream's order: bpm, caption, duration, genres, keyscale, language, timesignature.

* `<think>`, `\\n`, the field names and `</think>` are forced, tokenized as upstream's FSM writes a fixed string
  (the longest prefix that is one token, again and again); a value the user gave is forced as ` value\\n`;
* bpm, duration, keyscale, language and timesignature walk the constraint's prefix trees (`constraint.py`):
  a keyscale, language or time signature ends as soon as it is complete, a language starts with the likeliest
  of its first tokens;
* the caption is free text without audio codes or backticks, 512 tokens at most; after a line break whose next
  likeliest token does not start with a space or tab, the LM writes freely until a token holding ':' and the
  field it named (duration, genres, keyscale, language, timesignature) follows, else the next field in order;
* genres (upstream's `genres_vocab.txt` is missing from every copy of upstream we have, so its vocabulary-free
  path): anything but a line break first, then free text that ends where a line break is the likeliest token.
  Upstream there moves to the next field before the line break is counted, so the next field's name loses its
  first character (`eyscale:`) and its value is lost to the parse; here the name is written whole;
* after `</think>`: free text without audio codes, until the end-of-sequence or pad token or the token budget.

No mask here keeps the free parts well formed (upstream's do not either): the task's result keeps only the values
that are valid (`tasks.py`).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .constraint import MetadataConstraint

FIELD_ORDER = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")
JUMPS = ("duration", "genres", "keyscale", "language", "timesignature")  # what a caption's end may name next
ENDS_WHEN_COMPLETE = ("keyscale", "language", "timesignature")
MAX_AUDIO_CODE = 63999  # upstream blocks the code tokens up to this one (the DiT's codebook)
CAPTION_LIMIT = 512  # tokens of caption


class TaskConstraint:
    """Upstream's understand-phase masks and forced strings for one tokenizer (built once per planner)."""

    def __init__(self, constraint: MetadataConstraint):
        from .lm import CodeTokens

        tok = constraint.tokenizer
        self.metadata, self.tokenizer = constraint, tok
        self.newline = self._ids("\n")[-1]
        vocab = constraint.vocab_size
        padding = np.arange(vocab) >= len(tok)  # rows past the tokenizer: never written
        codes = CodeTokens.from_tokenizer(tok).limit(MAX_AUDIO_CODE + 1)
        no_codes = padding.copy()
        no_codes[codes.first_id : codes.first_id + codes.count] = True
        caption = no_codes.copy()
        caption[self._ids("`")[-1]] = True
        self.any, self.no_codes, self.caption = (mx.array(~m) for m in (padding, no_codes, caption))
        self.fixed = {text: self._fixed(text) for text in ("<think>", "\n", "</think>")}
        self.fixed.update({name: self._fixed(f"{name}:") for name in FIELD_ORDER})
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.stops = {tok.eos_token_id, pad}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _fixed(self, text: str) -> list[int]:
        """`text` as upstream's FSM forces it: the longest prefix of the rest that is one token, each time."""
        out, pos = [], 0
        while pos < len(text):
            rest = text[pos:]
            for end in range(len(rest), 0, -1):
                ids = self._ids(rest[:end])
                if len(ids) == 1:
                    break
            else:
                raise ValueError(f"the LM tokenizer has no single token starting {rest!r}")
            out.append(ids[0])
            pos += len(self.metadata.text(ids[0]))
        return out

    def value(self, value) -> list[int]:
        """A value the user gave, forced as upstream injects it."""
        return self._ids(f" {value}\n")


class _Done(Exception):
    """The budget is spent or an end token was written."""


class _Writer:
    """The tokens written so far; the ones not yet fed to the LM wait in `pending` (fed with the next forward)."""

    def __init__(self, step, tc: TaskConstraint, limit: int, callback=None):
        self.step, self.tc, self.limit, self.callback = step, tc, limit, callback
        self.tokens: list[int] = []
        self.pending: list[int] = []

    def emit(self, token: int) -> None:
        self.tokens.append(token)
        self.pending.append(token)
        if self.callback is not None:
            self.callback(len(self.tokens), self.limit)
        if len(self.tokens) >= self.limit or token in self.tc.stops:
            raise _Done

    def force(self, ids: list[int]) -> None:
        for token in ids:
            self.emit(token)

    def logits(self) -> mx.array:
        logits = self.step(self.pending)
        self.pending = []
        return mx.where(self.tc.any, logits, -mx.inf)

    def text(self, token: int) -> str:
        return self.tc.metadata.text(token)


def write_task(
    step, tc: TaskConstraint, user: dict, draw, limit: int, skip_language: bool = False, callback=None, trees=None
) -> list[int]:
    """The tokens of one task's answer: `step(ids) -> logits [vocab]` after feeding `ids`, `draw(scores) -> int`,
    `user` the values to force (None: written by the LM), at most `limit` tokens. `trees`: the value trees (default
    the constraint's; the duration's limited to what the model renders)."""
    w = _Writer(step, tc, limit, callback)
    trees = trees or tc.metadata.trees
    skipped = ("language",) if skip_language else ()

    def after(name: str) -> str | None:
        rest = [f for f in FIELD_ORDER[FIELD_ORDER.index(name) + 1 :] if f not in skipped]
        return rest[0] if rest else None

    try:
        w.force(tc.fixed["<think>"] + tc.fixed["\n"])
        name, named = "bpm", True
        while name is not None:
            if named:
                w.force(tc.fixed[name])
            if user.get(name) is not None:
                w.force(tc.value(user[name]))
                jump = None
            elif name == "caption":
                jump = _caption(w, draw)
            elif name == "genres":
                jump = _genres(w, draw)
            else:
                jump = _tree_value(w, name, trees[name], draw)
            name, named = (jump, False) if jump else (after(name), True)
        w.force(tc.fixed["</think>"])
        while True:
            w.emit(draw(mx.where(tc.no_codes, w.logits(), -mx.inf)))
    except _Done:
        pass
    return w.tokens


def _tree_value(w: _Writer, name: str, node, draw) -> None:
    newline, first = w.tc.newline, True
    while node.children:
        kids = node.children
        if name in ENDS_WHEN_COMPLETE and newline in kids:
            token = newline
        elif name == "language" and first:  # upstream takes the likeliest first token, whatever the sampling
            scores = w.logits()
            options = list(kids)
            token = options[int(mx.argmax(scores[mx.array(options)]).item())]
        elif len(kids) == 1:
            token = next(iter(kids))
        else:
            token = draw(mx.where(w.tc.metadata.mask(kids), w.logits(), -mx.inf))
        w.emit(token)
        node, first = kids[token], False


def _caption(w: _Writer, draw) -> str | None:
    """The caption; returns the field its end named (upstream then writes that field's value), else None."""
    count, after_break, ending, named = 0, False, False, ""
    while True:
        logits = w.logits()
        if after_break:
            after_break = False
            top = w.text(int(mx.argmax(logits).item()))
            if top and top[0] not in " \t":  # a new field: the LM writes its name freely
                ending, named = True, ""
        if ending:
            token = draw(logits)
        elif count >= CAPTION_LIMIT:
            token = w.tc.newline
        else:
            token = draw(mx.where(w.tc.caption, logits, -mx.inf))
        w.emit(token)
        count += 1
        text = w.text(token)
        after_break = "\n" in text
        if ending:
            named += text
            if ":" in text:
                field = named.strip().rstrip(":").strip().lower()
                return field if field in JUMPS else None


def _genres(w: _Writer, draw) -> None:
    newline, written = w.tc.newline, ""
    while True:
        logits = w.logits()
        if written.strip():
            others = mx.where(mx.arange(logits.shape[0]) == newline, -mx.inf, logits)
            if (logits[newline] > mx.max(others)).item():  # upstream ends the field where a break is likeliest
                w.emit(newline)
                return None
        else:
            logits = mx.where(mx.arange(logits.shape[0]) == newline, -mx.inf, logits)
        token = draw(logits)
        w.emit(token)
        if token == newline:
            return None
        written += w.text(token)
