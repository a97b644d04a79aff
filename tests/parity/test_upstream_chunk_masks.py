"""repaint and lego's chunk masks in upstream's two modes, against the reference's own
`_build_chunk_masks_and_src_latents` at 6d467e4 (`scripts/upstream_masks.py`).

Upstream's "auto" (its default since March 2026) assigns 2.0 to the item's row of a *bool* tensor, which stores
True: the DiT's context then carries 1 over the whole item, not 2.0 as upstream's comment, its commit message and
spec 5.4 say. The code wins: these goldens hold 1. The source latents (silenced inside a repaint region, kept for
lego) and the injection region do not depend on the mode."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from upstream import cases, load

from mlx_acestep.conditioning.tasks import Task, region_frames, region_mask, task_context

CASES = cases("chunk_masks")


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunk_masks_and_sources_match_upstream(name):
    inputs, outputs, args = load(CASES[name])
    frames = inputs["src_latents"].shape[1]
    task = Task(
        args["task"],
        repaint_start=args["repaint_start"],
        repaint_end=args["repaint_end"],
        chunk_mask_mode=args["chunk_mask_mode"],
    )
    region = region_frames(task.repaint_start, task.repaint_end, frames, frames)
    silence = mx.array(inputs["silence_latent"])[None]
    src, mask, is_cover = task_context(task, mx.array(inputs["src_latents"][0]), frames, silence, region)
    # exact: a mask is 0/1 and the source is copied, never computed
    np.testing.assert_array_equal(np.array(mask), outputs["chunk_masks"][0])
    np.testing.assert_array_equal(np.array(src), outputs["src_latents"][0])
    np.testing.assert_array_equal(np.array(region_mask(frames, region)), outputs["repaint_mask"][0] > 0)
    assert is_cover == bool(outputs["is_covers"][0])
    PARITY_ERRORS.append((f"upstream {name}", "chunk_masks, src_latents", 0.0, 0.0))


def test_the_modes_differ_where_they_should():
    """The goldens are not all the same mask: explicit marks the region, auto does not."""
    explicit = load(CASES["chunk_mask_repaint_explicit_1"])[1]["chunk_masks"]
    auto = load(CASES["chunk_mask_repaint_auto_1"])[1]["chunk_masks"]
    assert 0 < explicit.sum() < explicit.size and auto.min() == auto.max() == 1.0
