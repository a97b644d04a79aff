"""Declared fields, and every verb naming the flag of a bad value the same way (no model loads here)."""

import pytest
from click.testing import CliRunner

from mlx_acestep.errors import AceStepError, FieldError, MissingDiT, RequestError
from mlx_acestep.fields import Field, Fields
from mlx_acestep.source import ModelSource


def message(field, value, error=FieldError):
    with pytest.raises(error) as info:
        field.check(value, error)
    assert info.value.name == field.name
    return str(info.value)


def test_each_kind_checks_its_type_and_coerces_whole_numbers():
    assert Field("n", "integer", 1, 10).check(4.0) == 4 and type(Field("n", "integer").check(4.0)) is int
    assert message(Field("n", "integer"), 4.5) == "n must be a whole number, got 4.5"
    assert message(Field("n", "integer"), True) == "n must be a whole number, got True"
    assert message(Field("x", "number", unit="seconds"), "3") == "x must be a number of seconds, got '3'"
    assert message(Field("x", "number"), float("nan")) == "x must be a number, got nan"
    assert message(Field("t", "text"), 3) == "t must be text, got int"
    assert message(Field("b", "bool"), 1) == "b must be True or False, got 1"
    assert message(Field("b", "bool", optional=True), 1) == "b must be True, False or None, got 1"
    assert message(Field("m", "choice", choices=("ode", "sde"), what="method"), "x") == (
        "unknown method 'x' (choose ode or sde)"
    )
    assert Field("x", "number", 0, 1, optional=True).check(None) is None
    assert message(Field("x", "number", 0, 1), None) == "x must be a number, got None"


@pytest.mark.parametrize(
    "field, inside, outside, words",
    [
        (Field("x", "number", 10, 600, unit="seconds"), (10, 600), (9.9, 601), "x must be between 10 and 600 seconds"),
        (Field("x", "number", 0, 10, low_open=True), (1e-9, 10), (0, 10.5), "x must be in (0, 10]"),
        (Field("x", "number", 0, 1, high_open=True), (0, 0.99), (1, -0.1), "x must be in [0, 1)"),
        (Field("x", "number", 0, 1, low_open=True, high_open=True), (0.5,), (0, 1), "x must be in (0, 1)"),
        (Field("x", "number", 0, low_open=True), (1e-9, 1e9), (0, -1), "x must be a positive number"),
        (Field("n", "integer", 1), (1, 10**9), (0, -5), "n must be at least 1"),
        (Field("n", "integer", hi=5, high_open=True), (4, -3), (5, 6), "n must be less than 5"),
        (Field("n", "integer", 0, 2**63 - 1), (0, 2**63 - 1), (-1, 2**63), "n must be between 0 and 2**63 - 1"),
    ],
)
def test_ranges_have_open_or_closed_ends(field, inside, outside, words):
    for v in inside:
        assert field.check(v) == v
    for v in outside:
        assert message(field, v).startswith(words + ", got ")


def test_a_group_raises_its_own_error_and_renders_flags():
    group = Fields(Field("batch_size", "integer", 1, 8), error=RequestError)
    with pytest.raises(RequestError) as info:
        group.check("batch_size", 9)
    assert isinstance(info.value, FieldError) and isinstance(info.value, AceStepError)
    assert info.value.render({"batch_size": "--batch"}) == "--batch must be between 1 and 8, got 9"


def test_the_training_config_names_its_fields():
    from mlx_acestep.training.config import TrainConfig

    for fields, name, text in [
        (dict(rank=0), "rank", "rank must be at least 1, got 0"),
        (dict(dropout=1.0), "dropout", "dropout must be in [0, 1), got 1"),
        (dict(alpha=0), "alpha", "alpha must be a positive number, got 0"),
        (dict(crop_seconds=2), "crop_seconds", "crop_seconds must be between 5 and 600 seconds, got 2"),
        (dict(seed=-1), "seed", "seed must be between 0 and 2**63 - 1, got -1"),
        (dict(targets=("self", "ffn")), "targets", "targets must be self and/or cross"),
        (dict(grad_accum=0), "grad_accum", "grad_accum must be at least 1, got 0"),
    ]:
        with pytest.raises(FieldError) as info:
            TrainConfig(**fields)
        assert info.value.name == name and str(info.value).startswith(text), str(info.value)
    assert TrainConfig(rank=8.0).rank == 8 and TrainConfig().targets == ("self", "cross")


def test_the_model_source_checks_its_options():
    assert ModelSource("tiny", quantize="none", lm_quantize="q8").quantize is None
    for fields, name, text in [
        (dict(lm="2B"), "lm", "unknown planner LM '2B'"),
        (dict(dtype="int8"), "dtype", "unknown dtype 'int8'"),
        (dict(quantize="q3"), "quantize", "unknown quantization 'q3'"),
        (dict(q_group_size=48), "q_group_size", "unknown quantization group size 48"),
        (dict(reconvert="yes"), "reconvert", "reconvert must be True or False"),
    ]:
        with pytest.raises(FieldError) as info:
            ModelSource("tiny", **fields)
        assert info.value.name == name and str(info.value).startswith(text), str(info.value)


def test_the_server_refuses_bad_settings_itself(tmp_path):
    pytest.importorskip("fastapi")
    from mlx_acestep.server import make_app
    from mlx_acestep.server.config import ServerConfig

    for settings, text in [
        (dict(queue_size=0), "queue_size must be at least 1, got 0"),
        (dict(keep_hours=0), "keep_hours must be a positive number, got 0"),
        (dict(keep_hours=float("inf")), "keep_hours must be a number, got inf"),
        (dict(port=70000), "port must be between 0 and 65535, got 70000"),
    ]:
        with pytest.raises(FieldError, match=text.replace("(", r"\(")):
            make_app(object(), tmp_path / "out", **settings)  # refused before the pipeline is touched
        with pytest.raises(FieldError, match=text.replace("(", r"\(")):
            ServerConfig(tmp_path, **settings)
    assert ServerConfig(tmp_path, api_key="").api_key is None and not (tmp_path / "out").exists()


def test_missing_dit_is_typed():
    e = MissingDiT("/m", "acestep-v15-base", ["acestep-v15-turbo"])
    assert isinstance(e, AceStepError) and e.dit == "acestep-v15-base" and e.available == ("acestep-v15-turbo",)
    assert str(e) == "/m: no DiT 'acestep-v15-base' (available: acestep-v15-turbo)"


def one_line_error(command, args):
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0].removeprefix("Error: ")


def test_every_verb_names_the_flag_of_a_bad_value(tmp_path):
    """generate, train and serve render a field's error the same way: by the option that set it."""
    from mlx_acestep.cli import generate, serve, train

    assert one_line_error(generate, ["piano", "--batch", "9"]) == "--batch must be between 1 and 8, got 9"
    assert one_line_error(generate, ["piano", "--time-signature", "5"]).startswith("--time-signature must be one of")
    assert one_line_error(generate, ["piano", "--key", "H major"]).startswith("unknown key 'H major' for --key")
    data = str(tmp_path)
    assert one_line_error(train, [data, "-o", "x", "--grad-accum", "0"]) == "--grad-accum must be at least 1, got 0"
    assert one_line_error(train, [data, "-o", "x", "--crop-seconds", "2"]).startswith("--crop-seconds must be between")
    assert one_line_error(train, [data, "-o", "x", "--targets", "ffn"]).startswith("--targets must be self and/or")
    out = ["--output-dir", str(tmp_path / "out")]  # no default: that would open the user's model cache
    assert one_line_error(serve, [*out, "--queue", "0"]) == "--queue must be at least 1, got 0"
    assert one_line_error(serve, [*out, "--keep-hours", "-1"]).startswith(
        "--keep-hours must be a positive number, got -1"
    )
    assert one_line_error(serve, [*out, "--port", "70000"]) == "--port must be between 0 and 65535, got 70000"


def test_generate_train_and_serve_share_the_model_flags():
    from mlx_acestep.cli import generate, serve, train

    def options(command):
        return {p.name: p for p in command.params}

    model = ("model", "dit", "dtype", "quantize", "cache_dir", "reconvert")
    planner = ("lm", "lm_quantize")
    gen, tr, srv = options(generate), options(train), options(serve)
    for name in model + planner:
        assert gen[name].opts == srv[name].opts and gen[name].default == srv[name].default, name
    for name in model:
        assert gen[name].opts == tr[name].opts and gen[name].default == tr[name].default, name
    assert not set(planner) & set(tr)  # training never loads the planner
    assert gen["model"].opts == ["-m", "--model"] and gen["quantize"].default == "none"
