"""A task's song writing over REST, as upstream's API maps it (`acestep/api/llm_generation_inputs.py`,
`api/server_utils.py`): `sample_mode` / `sample_query` (the planner writes the song first, and the query's hints
choose its language and whether it has vocals) and `use_format` (it tidies the caption and lyrics first)."""

from __future__ import annotations

import re

# Upstream's language hints in a sample query (`parse_description_hints`): a name or code -> the code. A name of two
# letters must stand alone; the first match in this order wins.
LANGUAGE_HINTS = {
    "english": "en", "en": "en", "chinese": "zh", "中文": "zh", "zh": "zh", "mandarin": "zh", "japanese": "ja",
    "日本語": "ja", "ja": "ja", "korean": "ko", "한국어": "ko", "ko": "ko", "spanish": "es", "español": "es", "es": "es",
    "french": "fr", "français": "fr", "fr": "fr", "german": "de", "deutsch": "de", "de": "de", "italian": "it",
    "italiano": "it", "it": "it", "portuguese": "pt", "português": "pt", "pt": "pt", "russian": "ru", "русский": "ru",
    "ru": "ru", "bengali": "bn", "bn": "bn", "hindi": "hi", "hi": "hi", "arabic": "ar", "ar": "ar", "thai": "th",
    "th": "th", "vietnamese": "vi", "vi": "vi", "indonesian": "id", "id": "id", "turkish": "tr", "tr": "tr",
    "dutch": "nl", "nl": "nl", "polish": "pl", "pl": "pl",
}  # fmt: skip
# What the song writing replaces (upstream's sample mode overrides them with the sample's).
WRITTEN = ("caption", "lyrics", "duration", "bpm", "key", "time_signature")


def query_hints(query: str) -> tuple[str | None, bool]:
    """(the language a query names, whether it asks for an instrumental), as upstream reads them."""
    text = query.lower().strip()
    if not text:
        return None, False
    language = None
    for name, code in LANGUAGE_HINTS.items():
        edge = r"(?:^|\s|[.,;:!?])", r"(?:$|\s|[.,;:!?])"
        pattern = f"{edge[0]}{re.escape(name)}{edge[1]}" if len(name) <= 2 else rf"\b{re.escape(name)}\b"
        if re.search(pattern, text):
            language = code
            break
    instrumental = (
        "instrumental" in text or "pure music" in text or "pure instrument" in text or text.endswith(" solo")
    ) or text == "solo"
    return language, instrumental


def song_writing(f: dict, fields: dict, flag) -> None:
    """A task's `sample_mode`, `sample_query` and `use_format` (in `f`, its fields by upstream's names), onto its
    request fields; `flag(value, default, name)` reads a boolean as the protocol does."""
    query = str(f.get("sample_query") or "")
    if flag(f.get("sample_mode"), False, "sample_mode") or query.strip():
        hint, instrumental = query_hints(query)
        language = fields.get("language")
        for name in WRITTEN:
            fields.pop(name, None)
        fields.update(
            caption="",
            sample=query if query.strip() else "",
            instrumental=instrumental,
            language=language if language not in ("en", "unknown", "") else hint or "unknown",
        )
    if flag(f.get("use_format"), False, "use_format") and (fields.get("caption") or fields.get("sample") is not None):
        fields["format"] = True
