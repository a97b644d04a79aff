"""Cover noise strength against upstream's own turbo `generate_audio` at 6d467e4 (`scripts/make_upstream_fixtures.py`):
the run starts from the source noised to the schedule time nearest 1 - c and runs only the rest. (Upstream's own
MLX path drops this option; this port must not.)"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import PARITY_ERRORS
from helpers import rel_err

from mlx_acestep.diffusion.edits import EditHooks
from mlx_acestep.diffusion.flow import FlowMatching
from mlx_acestep.diffusion.sampler import TurboSettings, sample_turbo
from mlx_acestep.loading import load_silence_latent

ROOT = Path(__file__).parent.parent / "fixtures" / "upstream"
RUNS = {
    k: v
    for k, v in json.loads((ROOT / "cases.json").read_text())["cases"].items()
    if v["component"] == "acestep-v15-turbo:cover_noise"
}
TOLERANCE = 1e-4  # as the February sampler cases; measured 1.5e-6 and 1.6e-6


def test_the_start_is_the_nearest_time_of_the_schedule_and_the_rest_is_run():
    flow, source, noise = FlowMatching.turbo(3.0), mx.ones((1, 4, 2)), mx.zeros((1, 4, 2))
    rest, start = EditHooks(source=source, cover_noise=0.4).start(flow, noise)
    assert rest.times == flow.times[5:] and rest.steps == 3  # 1 - 0.4 = 0.6: nearest 0.642857, step 5 of 8
    np.testing.assert_allclose(np.array(start), 1 - flow.times[5], rtol=1e-6)  # t* noise + (1 - t*) source
    assert EditHooks(source=source).start(flow, noise) == (flow, None)  # no cover noise: from the noise


@pytest.mark.parametrize("name", sorted(RUNS))
def test_cover_noise_matches_upstreams_generate_audio(name, converted, load_converted):
    from parity import CONDITION_INPUTS, _mx
    from safetensors.numpy import load_file

    case = RUNS[name]
    tensors, args = load_file(str(ROOT / case["file"])), case["args"]
    inp = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    model = load_converted("acestep-v15-turbo")
    prepared = model.prepare_condition(
        *_mx(inp, *CONDITION_INPUTS), load_silence_latent(converted / "acestep-v15-turbo")
    )
    edit = EditHooks(source=mx.array(inp["src_latents"]), cover_noise=args["cover_noise_strength"])
    ours = sample_turbo(
        model.decoder,
        prepared.encoder_hidden_states,
        prepared.context_latents,
        TurboSettings(shift=args["shift"]),
        noise=mx.array(inp["noise"]),
        edit=edit,
    )
    err = rel_err(np.array(ours), tensors["out.target_latents"])
    PARITY_ERRORS.append((f"upstream {name}", "target_latents", err, TOLERANCE))
    assert err <= TOLERANCE, err
    plain = sample_turbo(
        model.decoder,
        prepared.encoder_hidden_states,
        prepared.context_latents,
        TurboSettings(shift=args["shift"]),
        noise=mx.array(inp["noise"]),
    )
    assert rel_err(np.array(plain), tensors["out.target_latents"]) > 30 * TOLERANCE  # the option really acts
