"""Phase 1 of the planner: the `<think>` metadata block under a token-level constraint (spec 8.3, 8.4).

The block is written field by field in the reference's order (bpm, caption,
duration, keyscale, language, timesignature), one `name: value` line each:

* field names, `<think>\\n` and the values the user gave are forced, tokenized
  as `name: value\\n` is in running text (the reference's forced-token queue);
* bpm 30-300, duration 10-max, the 70 key/scale strings, the valid language
  codes and time signatures 2/3/4/6 are prefix trees over the token ids of
  every valid value, so only valid values can be written; a value ends with
  its newline, chosen by sampling where a longer value would also be valid
  (`30` vs `300`); the language's first token is the most likely one, as
  the reference picks it;
* the caption is free text with backticks and every added token (audio codes,
  chat and think markers, end of sequence) blocked, so it cannot end the
  block or leak codes; after a line break it continues only while the most
  likely next token is indented (YAML continuation, and then only indented
  tokens may start the line, so the block always parses), else the next
  field name is forced; 512 tokens at most, as the reference.

Tokens that the constraint forces are fed to the LM without sampling, several
in one forward. Each sampled token is read back to the host: the constraint
needs it to choose the next mask (phase 1 is a few hundred tokens; the codes
phase, which is the long one, never syncs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..conditioning.prompts import LANGUAGES
from ..errors import AceStepError
from ..limits import BPM, PLANNER_CAPTION_TOKENS, PLANNER_SECONDS
from ..names import KEYSCALES, TIME_SIGNATURES  # noqa: F401  (the value lists it constrains to)

FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
DURATION_RANGE = PLANNER_SECONDS


def _durations(longest: int) -> list[str]:
    return [str(v) for v in range(DURATION_RANGE[0], longest + 1)]


@dataclass
class _Trie:
    """Token-id prefix tree of every valid value line (` value\\n` after `name:`)."""

    children: dict[int, _Trie] = field(default_factory=dict)

    def add(self, ids: list[int]) -> None:
        node = self
        for i in ids:
            node = node.children.setdefault(i, _Trie())


class MetadataConstraint:
    """The phase-1 constraint for one tokenizer (build once, reuse for every song)."""

    def __init__(self, tokenizer, vocab_size: int, max_duration: int = DURATION_RANGE[1]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.open = self._ids("<think>\n")
        self.close = self._ids("</think>")
        if len(self.close) != 1 or len(self._ids("<think>")) != 1:
            raise AceStepError("the LM tokenizer has no <think> / </think> tokens")
        self.names = {f: self._ids(f"{f}:") for f in FIELDS}
        values = {
            "bpm": [str(v) for v in range(BPM[0], BPM[1] + 1)],
            "duration": _durations(max_duration),
            "keyscale": list(KEYSCALES),
            "language": sorted(LANGUAGES),
            "timesignature": list(TIME_SIGNATURES),
        }
        self.trees = {name: self._tree(name, options) for name, options in values.items()}
        self.max_duration = max_duration
        # The caption may use any ordinary token: no backtick, nothing added to the base vocabulary.
        blocked = np.zeros(vocab_size, dtype=bool)
        blocked[len(tokenizer) :] = True  # embedding rows past the tokenizer (padding)
        for i in tokenizer.get_added_vocab().values():
            if i < vocab_size:
                blocked[i] = True
        for i in self._ids("`"):
            blocked[i] = True
        self.texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        # A token must not start an unindented line inside itself: that line would read as a new field.
        blocked[: len(self.texts)] |= [
            any(line[:1] not in ("", " ", "\t") for line in t.split("\n")[1:]) for t in self.texts
        ]
        indented = np.zeros(vocab_size, dtype=bool)
        indented[: len(self.texts)] = [t.startswith((" ", "\t")) for t in self.texts]
        self.caption_ok = mx.array(~blocked)
        self.continuation_ok = mx.array(~blocked & indented)

    def _tree(self, name: str, values: list[str]) -> _Trie:
        tree = _Trie()
        for v in values:
            tree.add(self.value_ids(name, v))
        return tree

    def limit_duration(self, max_duration: int) -> MetadataConstraint:
        """The same constraint with durations up to `max_duration` (what the checkpoint can render)."""
        if max_duration == self.max_duration:
            return self
        if max_duration < DURATION_RANGE[0]:
            raise AceStepError(f"the longest duration must be at least {DURATION_RANGE[0]} s, got {max_duration}")
        limited = copy.copy(self)
        limited.trees = {**self.trees, "duration": self._tree("duration", _durations(max_duration))}
        limited.max_duration = max_duration
        return limited

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def value_ids(self, name: str, value: str) -> list[int]:
        """The ids of ` value\\n` as they follow `name:` in running text."""
        head, full = self.names[name], self._ids(f"{name}: {value}\n")
        if full[: len(head)] != head:
            raise AceStepError(f"the LM tokenizer splits '{name}: {value}' across the field name")
        return full[len(head) :]

    def text(self, token: int) -> str:
        return self.texts[token] if token < len(self.texts) else ""

    def mask(self, allowed) -> mx.array:
        m = np.zeros(self.vocab_size, dtype=bool)
        m[list(allowed)] = True
        return mx.array(m)


@dataclass
class ThinkResult:
    text: str  # the think block as written, `<think>\n...\n</think>`
    tokens: list[int]
    metadata: dict


def write_metadata(
    step,
    constraint: MetadataConstraint,
    user: dict,
    sample,
) -> ThinkResult:
    """Run the constraint over `step`, the LM: `step(ids) -> logits [vocab]` after feeding `ids`.

    `user` maps field names to the values to force (strings; missing or None: generated).
    `sample(logits) -> int` draws one token from masked logits.
    """
    c = constraint
    pending: list[int] = []
    out: list[int] = []

    def force(ids: list[int]) -> None:
        pending.extend(ids)
        out.extend(ids)

    def choose(allowed: mx.array, greedy: bool = False) -> int:
        logits = step(pending)
        pending.clear()
        scores = mx.where(allowed, logits, -mx.inf)
        token = int(mx.argmax(scores).item()) if greedy else sample(scores)
        force([token])
        return token

    force(c.open)
    for name in FIELDS:
        force(c.names[name])
        if user.get(name) not in (None, ""):
            force(c.value_ids(name, str(user[name])))
        elif name == "caption":
            _write_caption(c, step, pending, force, sample)
        else:
            node, first = c.trees[name], True
            while node.children:
                if len(node.children) == 1:
                    token = next(iter(node.children))
                    force([token])
                else:
                    token = choose(c.mask(node.children), greedy=first and name == "language")
                node, first = node.children[token], False
    force(c.close)
    text = c.tokenizer.decode(out)
    return ThinkResult(text, out, parse_think(text))


def _write_caption(c: MetadataConstraint, step, pending: list[int], force, sample) -> None:
    count, line_ended = 0, False
    while True:
        logits = step(pending)
        pending.clear()
        scores = mx.where(c.caption_ok, logits, -mx.inf)
        if line_ended:  # a YAML continuation line is indented; anything else starts the next field
            if not c.text(int(mx.argmax(scores).item())).startswith((" ", "\t")):
                return
            scores = mx.where(c.continuation_ok, logits, -mx.inf)  # so the line parses as a continuation
        if count == PLANNER_CAPTION_TOKENS:
            force(c._ids("\n"))
            return
        token = sample(scores)
        force([token])
        count += 1
        text = c.text(token)
        line_ended = "\n" in text and not text.rsplit("\n", 1)[1]  # else the token indents the new line itself


def parse_think(text: str) -> dict:
    """Fields of a think block (spec 8.3): a line starting without whitespace and holding ':' starts a field,
    indented lines continue it; bpm and duration as ints, the caption's YAML wrapping undone."""
    body = text.split("<think>", 1)[-1].rsplit("</think>", 1)[0]
    fields: dict[str, list[str]] = {}
    current = None
    for line in body.split("\n"):
        if line and not line[0].isspace() and ":" in line:
            key, value = line.split(":", 1)
            current = key.strip().lower()
            fields[current] = [value.strip()]
        elif current is not None and line.strip():
            fields[current].append(line.strip())
    meta: dict = {}
    for key, parts in fields.items():
        value = " ".join(p for p in parts if p)
        if key in ("bpm", "duration"):
            try:
                meta[key] = int(value)
            except ValueError:
                continue
        else:
            meta[key] = value
    return meta
