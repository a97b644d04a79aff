"""One test per case of the fixture folder's cases.json (ids contain the case name), run twice: with the CPU
fast paths (`mlx_acestep.kernels`) and with the plain formulation that Metal runs (fused SDPA, MLX's own
convolutions, sin-based Snake), so the path every Mac takes is held to the same tolerances here."""

import contextlib

import pytest
from conftest import PARITY_ERRORS
from parity import compare, fixtures_dir, load_case_tensors, load_cases, run_case, runner_for

CASES = load_cases(fixtures_dir()) if (fixtures_dir() / "cases.json").is_file() else {}


def test_fixture_folder_has_cases():
    """A wrong MLX_ACESTEP_FIXTURES must fail, not collect zero parity cases and pass."""
    assert CASES, f"no parity cases found in {fixtures_dir()}"


@pytest.mark.parametrize("path", ["cpu-kernels", "metal-path"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_parity(name, path, fixtures, converted, load_converted):
    from mlx_acestep import kernels

    with kernels.use_plain() if path == "metal-path" else contextlib.nullcontext():
        check_case(name, path, fixtures, converted, load_converted)


def check_case(name, path, fixtures, converted, load_converted):
    case = CASES[name]
    runner, reason = runner_for(case)
    if runner is None:  # a case nothing here can check is a failure: a skip would pass it unseen
        pytest.fail(f"{name}: {reason}")
    inputs, outputs = load_case_tensors(fixtures, case)
    folders = sorted(converted.glob(runner.component))
    assert folders, f"the converter produced no {runner.component} folder from the fixture checkpoints"
    model = folders[0] if runner.wants_folder else load_converted(folders[0].name)
    ours = run_case(runner, model, inputs, outputs, case, folders[0])
    failures = []
    for out_name, spec in case["outputs"].items():
        if out_name.startswith("debug_") or out_name in runner.injected:
            continue
        if out_name not in ours:
            failures.append(f"{out_name}: not produced")
            continue
        ok, msg, err = compare(out_name, ours[out_name], outputs[out_name], runner.tolerance, spec.get("exact", False))
        allowed = 0.0 if spec.get("exact", False) else runner.tolerance.rel_max
        PARITY_ERRORS.append((name if path == "cpu-kernels" else f"{name} [metal path]", out_name, err, allowed))
        if not ok:
            failures.append(msg)
    assert not failures, f"{name}: " + "; ".join(failures)


def test_a_case_without_a_runner_fails(monkeypatch):
    """A fixture case for a component nothing here can run must fail, not skip (a skip passes it unseen)."""
    monkeypatch.setitem(
        CASES, "made_up", {"component": "acestep-v15-turbo:nothing", "inputs": {}, "outputs": {"x": {}}}
    )
    with pytest.raises(pytest.fail.Exception, match="made_up: no runner for component"):
        check_case("made_up", "cpu-kernels", None, None, None)
