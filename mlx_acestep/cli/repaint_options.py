"""`generate`'s repaint / lego cross-fade flags, each the request field of the same name (upstream's Python names)."""

from __future__ import annotations

import click

REPAINT_FIELDS = ("repaint_latent_crossfade_frames", "repaint_wav_crossfade_sec")


def repaint_options(fn):
    """The flags, in this order in --help."""
    for option in reversed(
        [
            click.option(
                "--repaint-latent-crossfade-frames",
                type=int,
                default=None,
                help="repaint/lego: the latent frames (25 a second) over which the result ramps into the source "
                "outside the region; 0: no blend (default: the repaint mode's, 12 when balanced).",
            ),
            click.option(
                "--repaint-wav-crossfade-sec",
                type=float,
                default=None,
                help="repaint/lego: the cross-fade, in seconds, where the source's own waveform is spliced back "
                "outside the region; 0: a hard cut (default: the repaint mode's, 0.025 when balanced; "
                "aggressive does not splice).",
            ),
        ]
    ):
        fn = option(fn)
    return fn
