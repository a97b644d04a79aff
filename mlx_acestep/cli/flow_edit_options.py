"""`generate`'s flow-edit flags (upstream's "smooth morph"), each the request field of the same name."""

from __future__ import annotations

import click

FLOW_EDIT_FIELDS = (
    "flow_edit",
    "flow_edit_source_caption",
    "flow_edit_source_lyrics",
    "flow_edit_n_min",
    "flow_edit_n_max",
    "flow_edit_n_avg",
)


def flow_edit_options(fn):
    """The flags, in this order in --help."""
    for option in reversed(
        [
            click.option(
                "--flow-edit",
                is_flag=True,
                default=False,
                help="Change the song in --src-audio toward CAPTION / --lyrics while keeping its structure (its form, "
                "timing and melody stay; what the words describe changes: style, instruments, words sung). Say what "
                "the song is now with --flow-edit-source-caption / --flow-edit-source-lyrics. text2music, cover and "
                "cover-nofsq; Euler, no DCW (as upstream).",
            ),
            click.option(
                "--flow-edit-source-caption",
                default=None,
                help="flow-edit: the caption of the song as it is (default: CAPTION, so only the lyrics change).",
            ),
            click.option(
                "--flow-edit-source-lyrics",
                default=None,
                help="flow-edit: the lyrics of the song as it is (default: --lyrics, so only the caption changes).",
            ),
            click.option(
                "--flow-edit-n-min",
                type=float,
                default=None,
                help="flow-edit: where the edit starts, as a share of the steps, 0 to 1 (default 0). Later keeps more "
                "of the song's broad shape: only finer features change.",
            ),
            click.option(
                "--flow-edit-n-max",
                type=float,
                default=None,
                help="flow-edit: where the edit stops, 0 to 1 (default 1). Earlier leaves the last steps to the new "
                "caption alone: details and texture follow it more, the song's fine detail less.",
            ),
            click.option(
                "--flow-edit-n-avg",
                type=int,
                default=None,
                help="flow-edit: noise draws averaged each step, 1 to 8 (default 1): steadier, cleaner edits, at two "
                "DiT passes per draw.",
            ),
        ]
    ):
        fn = option(fn)
    return fn
