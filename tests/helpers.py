"""What the tests share (fixtures are in conftest.py): the live-reference import, error measures, the one way to
run the command line, the one-line-error check and the one HTTP client of the server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


def require(module: str):
    """Import a live reference (torch, diffusers, transformers, peft) for a test.

    Locally a missing one skips the test; in CI (`CI=true`) it fails it: a broken test extra must not turn the
    live comparisons into a row of quiet skips.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        try:
            return __import__(module)
        except ImportError as e:
            pytest.fail(f"the live reference {module!r} is missing in CI ({e}); install the test extra")
    return pytest.importorskip(module)


@dataclass
class CliResult:
    """What a run of `mlx-acestep` left: its exit code and what it wrote (the names of both subprocess and click)."""

    returncode: int
    stdout: str
    stderr: str
    output: str  # stdout and stderr together, in the order they were written

    @property
    def exit_code(self) -> int:
        return self.returncode

    def __iter__(self):  # `code, output = result`
        return iter((self.returncode, self.output))


def run_cli(args, cwd=None, *, env=None, stdin=None, fresh_process=False, timeout=600) -> CliResult:
    """`mlx-acestep ARGS` in `cwd`, with `env` added to the environment and `stdin` as its input.

    In this process through click's runner unless `fresh_process`: a new interpreter costs seconds of imports, and
    only a test of the process itself needs one (what it imports at start-up, what it reads from the environment at
    import, LD_PRELOAD, signals). In-process, an exception the CLI does not turn into an error line propagates and
    fails the test, as a traceback would fail the subprocess's checks.
    """
    args = [str(a) for a in args]
    if fresh_process:
        done = subprocess.run(
            [sys.executable, "-m", "mlx_acestep.cli", *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr, done.stdout + done.stderr)
    from click.testing import CliRunner

    from mlx_acestep.cli import main

    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # as a fresh interpreter shows them, not as pytest records them
            result = CliRunner().invoke(main, args, input=stdin, env=env, catch_exceptions=False)
    finally:
        os.chdir(old)
    return CliResult(result.exit_code, result.stdout, result.stderr, result.output)


def assert_one_line_error(result: CliResult, *needles: str, after_progress: bool = False) -> str:
    """Exit code 1 and one line on stderr, `Error: ...`, holding every needle; no traceback anywhere. Returns it.

    `after_progress`: an error found once work began may follow the progress lines the run printed until then.
    """
    assert "Traceback" not in result.stdout + result.stderr, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if after_progress:
        assert [line for line in lines if line.startswith("Error:")] == lines[-1:], result.output
        lines = lines[-1:]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class ApiClient:
    """The server's HTTP API as a client sees it, on FastAPI's TestClient (the app runs on a real event loop in a
    thread, its lifespan included); `key` goes in the Authorization header."""

    def __init__(self, app, key=None):
        require("fastapi")
        from fastapi.testclient import TestClient

        self.key = key
        self.client = TestClient(app, raise_server_exceptions=False)

    def __enter__(self):
        self.client.__enter__()
        return self

    def __exit__(self, *exc):
        self.client.__exit__(*exc)

    def call(self, method, path, body=None, key=..., content_type="application/json", raw=None):
        """(status, body bytes, headers); `key=None` sends no key, `raw` sends bytes as they are."""
        key = self.key if key is ... else key
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {}
        if data is not None:
            headers["Content-Type"] = content_type
        if key:
            headers["Authorization"] = f"Bearer {key}"
        r = self.client.request(method, path, content=data, headers=headers)
        return r.status_code, r.content, r.headers

    def json(self, *args, **kwargs):
        status, body, _ = self.call(*args, **kwargs)
        return status, json.loads(body)

    def wait(self, task_id, timeout=180):
        """Poll /query_result until the task succeeded (1) or failed (2): (status, result items)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, env = self.json("POST", "/query_result", {"task_id_list": [task_id]})
            entry = env["data"][0]
            if entry["status"] in (1, 2):
                return entry["status"], json.loads(entry["result"])
            time.sleep(0.2)
        raise AssertionError("the task did not finish")


def patch_generation(monkeypatch, pipe, wrap) -> None:
    """Replace both ways a server job runs on `pipe` (`generate`, and `generate_stream` for one that can stream:
    server/windows.py) by `wrap(real)`: a test holding, spying on or breaking a job's run holds either."""
    for name in ("generate", "generate_stream"):
        monkeypatch.setattr(pipe, name, wrap(getattr(pipe, name)))


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


HALF_SEEDS = 5  # half-precision floors hold over this many seeds, drawn afresh each run


def drawn_seeds(n: int = HALF_SEEDS) -> list[int]:
    """Seeds drawn afresh for a run (floors must hold on any draw, not on one fitted seed); set
    MLX_ACESTEP_HALF_SEEDS="s1,s2,..." to replay the ones a failure names."""
    replay = os.environ.get("MLX_ACESTEP_HALF_SEEDS")
    if replay:
        return [int(s) for s in replay.split(",")]
    return [int(s) for s in np.random.SeedSequence().generate_state(n)]


def snr_db(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ours - ref) ** 2), 1e-300)))


def copy_vae_root(fixtures: Path, dst: Path) -> Path:
    """A checkpoint root holding only the fixture VAE (fast to convert)."""
    (dst / "vae").mkdir(parents=True)
    for f in (fixtures / "checkpoints" / "vae").iterdir():
        shutil.copy(f, dst / "vae" / f.name)
    return dst


# DIFFUSERS-MAPPING rule 2: original attention segment -> diffusers segment.
ATTENTION_RENAMES = {
    ".q_proj.": ".to_q.",
    ".k_proj.": ".to_k.",
    ".v_proj.": ".to_v.",
    ".o_proj.": ".to_out.0.",
    ".q_norm.": ".norm_q.",
    ".k_norm.": ".norm_k.",
}
CONDITION_ENCODER_ARGS = (
    "hidden_size",
    "intermediate_size",
    "text_hidden_dim",
    "timbre_hidden_dim",
    "num_lyric_encoder_hidden_layers",
    "num_timbre_encoder_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rope_theta",
    "rms_norm_eps",
    "sliding_window",
    "layer_types",
)


def rename_segments(key: str, table: dict[str, str]) -> str:
    for a, b in table.items():
        key = key.replace(a, b)
    return key


def diffusers_condition_encoder(config: dict, state: dict, silence_latent):
    """diffusers' AceStepConditionEncoder loaded strictly from an original-layout DiT state dict.

    `silence_latent` is the original channel-first `[1, C, T]` tensor (mapping rule 4).
    """
    import torch
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder

    ref = AceStepConditionEncoder(**{k: config[k] for k in CONDITION_ENCODER_ARGS}).eval()
    mapped = {
        rename_segments(k[len("encoder.") :], ATTENTION_RENAMES): v
        for k, v in state.items()
        if k.startswith("encoder.")
    }
    mapped["null_condition_emb"] = state["null_condition_emb"]
    ref.silence_latent = torch.as_tensor(silence_latent).transpose(1, 2).contiguous()  # re-registered at its length
    mapped["silence_latent"] = ref.silence_latent
    ref.load_state_dict({k: torch.as_tensor(v) for k, v in mapped.items()}, strict=True)
    return ref


# diffusers module -> original prefix (DIFFUSERS-MAPPING rule 1) and its patch-conv names (rule 3).
DIFFUSERS_PREFIXES = {
    "transformer": "decoder.",
    "condition_encoder": "encoder.",
    "audio_tokenizer": "tokenizer.",
    "audio_token_detokenizer": "detokenizer.",
}
PATCH_RENAMES = {"proj_in_conv.": "proj_in.1.", "proj_out_conv.": "proj_out.1."}


def _init_args(cls, config: dict, encoder_side: bool) -> dict:
    import inspect

    names = set(inspect.signature(cls.__init__).parameters)
    args = {k: v for k, v in config.items() if k in names}
    if encoder_side:  # XL: the encoder-side modules have their own widths (absent on 2B)
        for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
            if config.get(f"encoder_{k}") is not None:
                args[k] = config[f"encoder_{k}"]
    return args


def diffusers_dit_checkpoint(config: dict, folder, seed: int = 0, silence_frames: int = 900) -> dict:
    """Random diffusers ACE-Step modules for `config`, written to `folder` as an original-layout DiT checkpoint.

    Returns the four diffusers modules (eval mode) and the silence latent tensor `[1, T, C]`.
    """
    import json

    import torch
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    classes = {
        "transformer": AceStepTransformer1DModel,
        "condition_encoder": AceStepConditionEncoder,
        "audio_tokenizer": AceStepAudioTokenizer,
        "audio_token_detokenizer": AceStepAudioTokenDetokenizer,
    }
    modules, state = {}, {}
    for name, cls in classes.items():
        module = cls(**_init_args(cls, config, encoder_side=name != "transformer")).eval()
        with torch.no_grad():
            for key, p in module.named_parameters():
                if (
                    key.endswith("norm.weight")
                    or "norm_" in key
                    or "layernorm" in key
                    or key.endswith(("norm_q.weight", "norm_k.weight"))
                ):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.add_(0.02 * torch.randn_like(p))
        modules[name] = module
        for key, value in module.state_dict().items():
            if key == "silence_latent":
                continue
            key = rename_segments(rename_segments(key, {b: a for a, b in ATTENTION_RENAMES.items()}), PATCH_RENAMES)
            state[key if key == "null_condition_emb" else DIFFUSERS_PREFIXES[name] + key] = value.contiguous()
    silence = torch.randn(1, silence_frames, config["timbre_hidden_dim"])
    with torch.no_grad():
        modules["condition_encoder"].silence_latent = silence
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    # Every field the modules were built with, as a real config.json lists them (the defaults of the given ones too).
    full = dict(config)
    for module in modules.values():
        full.update(
            {k: v for k, v in dict(module.config).items() if not k.startswith("_") and k not in full and v is not None}
        )
    (folder / "config.json").write_text(json.dumps({**full, "model_type": "acestep"}))
    torch.save(silence.transpose(1, 2).contiguous(), folder / "silence_latent.pt")  # channel-first, as shipped
    return {**modules, "silence_latent": silence}
