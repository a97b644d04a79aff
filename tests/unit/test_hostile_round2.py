"""Issue 32's "bad" cases (hostile input, round two): each ended in a traceback, memory exhaustion or a silent wrong
result before its fix; each is now one line naming the problem, found before any work."""

import json
import shutil

import mlx.core as mx
import pytest
from helpers import assert_one_line_error, run_cli

from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_component


def test_a_billion_songs_are_refused_before_a_seed_is_drawn(tmp_path, monkeypatch):
    """The seed list was built before the 1..8 check: 20 GB and the OOM killer. The same through a replayed sidecar."""
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli(["generate", "x", "--batch", "1000000000"]), "--batch must be between 1 and 8")
    assert_one_line_error(run_cli(["generate", "x", "--batch", "1000000000", "--seed", "3"]), "--batch")


def _copy(converted, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(converted / name, dst)
    return dst


def test_a_float_weight_stored_as_integers_names_its_key(converted, tmp_path):
    folder = _copy(converted, tmp_path, "vae")
    files = sorted(folder.glob("*.safetensors"))
    weights = dict(mx.load(str(files[0])))
    key = sorted(k for k in weights if k.endswith("weight"))[0]
    weights[key] = weights[key].astype(mx.int32)
    mx.save_safetensors(str(files[0]), weights)
    with pytest.raises(AceStepError, match=rf"key '{key}' is stored as mlx.core.int32, expected a floating-point"):
        load_component(folder)


@pytest.mark.parametrize(
    ("name", "key", "value", "expected"),
    [
        ("acestep-v15-turbo", "hidden_size", "big", "a whole number"),
        ("acestep-v15-turbo", "layer_types", "all", "a list"),
        ("vae", "decoder_channels", 16.5, "a whole number"),
        ("vae", "downsampling_ratios", [2, "four"], "a list"),
        ("Qwen3-Embedding-0.6B", "hidden_size", "big", "a whole number"),
        ("Qwen3-Embedding-0.6B", "rms_norm_eps", "tiny", "a number"),
    ],
)
def test_a_config_field_of_the_wrong_type_names_the_file_and_field(converted, tmp_path, name, key, value, expected):
    folder = _copy(converted, tmp_path, name)
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AceStepError) as caught:
        load_component(folder)
    assert str(caught.value) == f"{folder / 'config.json'}: '{key}' must be {expected}, got {value!r}"
