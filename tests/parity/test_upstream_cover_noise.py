"""Cover noise strength against upstream's own turbo `generate_audio` at 6d467e4 (`scripts/make_upstream_fixtures.py`):
the run starts from the source noised to the schedule time nearest 1 - c and runs only the rest. (Upstream's own
MLX path drops this option; this port must not.)"""

import mlx.core as mx
import numpy as np
import pytest
from upstream import TurboRun, cases, check, load

from mlx_acestep.diffusion.edits import EditHooks
from mlx_acestep.diffusion.flow import FlowMatching
from mlx_acestep.diffusion.sampler import TurboSettings

RUNS = cases("acestep-v15-turbo:cover_noise")


def test_the_start_is_the_nearest_time_of_the_schedule_and_the_rest_is_run():
    flow, source, noise = FlowMatching.turbo(3.0), mx.ones((1, 4, 2)), mx.zeros((1, 4, 2))
    rest, start = EditHooks(source=source, cover_noise=0.4).start(flow, noise)
    assert rest.times == flow.times[5:] and rest.steps == 3  # 1 - 0.4 = 0.6: nearest 0.642857, step 5 of 8
    np.testing.assert_allclose(np.array(start), 1 - flow.times[5], rtol=1e-6)  # t* noise + (1 - t*) source
    assert EditHooks(source=source).start(flow, noise) == (flow, None)  # no cover noise: from the noise


@pytest.mark.parametrize("name", sorted(RUNS))
def test_cover_noise_matches_upstreams_generate_audio(name, converted, load_converted, formulation):
    inputs, outputs, args = load(RUNS[name])
    run = TurboRun(inputs, converted, load_converted)
    edit = EditHooks(source=mx.array(inputs["src_latents"]), cover_noise=args["cover_noise_strength"])
    settings = TurboSettings(shift=args["shift"])
    check(name, run(settings, edit=edit), outputs["target_latents"], plain=run(settings), label=formulation)
