"""The DiT checkpoint's silence latent: `.pt` (real) and `.safetensors` (fixtures), read without running pickle code."""

import os
import shutil

import numpy as np
import pytest
from helpers import require
from safetensors.numpy import load_file

from mlx_acestep.convert import convert_checkpoints
from mlx_acestep.convert.torch_pickle import read_torch_tensors
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import load_silence_latent


def fixture_silence(fixtures):
    return load_file(str(fixtures / "checkpoints" / "acestep-v15-turbo" / "silence_latent.safetensors"))[
        "silence_latent"
    ]


def test_safetensors_silence_latent_is_converted_channel_last(fixtures, converted):
    want = fixture_silence(fixtures)  # [1, 64, T] as shipped
    got = np.array(load_silence_latent(converted / "acestep-v15-turbo"))
    np.testing.assert_array_equal(got, want.transpose(0, 2, 1))


@pytest.mark.live
def test_torch_pickle_silence_latent_matches_torch_load(fixtures, turbo_root, tmp_path):
    torch = require("torch")
    want = torch.from_numpy(fixture_silence(fixtures)[:, :, :900].copy())
    (turbo_root / "silence_latent.safetensors").unlink()
    torch.save(want, turbo_root / "silence_latent.pt")  # as the real checkpoints ship it
    convert_checkpoints(turbo_root.parent, tmp_path / "out")
    got = np.array(load_silence_latent(tmp_path / "out" / "acestep-v15-turbo"))
    np.testing.assert_array_equal(got, torch.load(turbo_root / "silence_latent.pt").numpy().transpose(0, 2, 1))


@pytest.mark.live
def test_torch_pickle_reader_handles_views_dicts_and_bfloat16(tmp_path):
    torch = require("torch")
    view = torch.arange(35, dtype=torch.float32).reshape(5, 7).t()[1:]  # non-contiguous, offset storage
    torch.save({"view": view, "half": torch.randn(4).bfloat16(), "ids": torch.arange(3)}, tmp_path / "d.pt")
    got = read_torch_tensors(tmp_path / "d.pt")
    np.testing.assert_array_equal(got["view"], view.numpy())
    np.testing.assert_array_equal(got["half"], torch.load(tmp_path / "d.pt")["half"].float().numpy())
    np.testing.assert_array_equal(got["ids"], [0, 1, 2])


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.live
def test_torch_pickle_reader_refuses_code(tmp_path, monkeypatch):
    torch = require("torch")
    monkeypatch.chdir(tmp_path)
    torch.save(_Payload(), tmp_path / "evil.pt")
    with pytest.raises(AceStepError, match="refusing to load '(posix|os|nt).system'"):
        read_torch_tensors(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_non_zip_pt_is_a_clear_error(tmp_path):
    (tmp_path / "old.pt").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(AceStepError, match="not a torch zip archive"):
        read_torch_tensors(tmp_path / "old.pt")


def test_missing_silence_latent_fails_the_conversion(turbo_root, tmp_path):
    (turbo_root / "silence_latent.safetensors").unlink()
    with pytest.raises(AceStepError, match="missing silence_latent.pt"):
        convert_checkpoints(turbo_root.parent, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_silence_shape_is_a_clear_error(turbo_root, tmp_path):
    from safetensors.numpy import save_file

    save_file({"silence_latent": np.zeros((1, 1000, 64), np.float32)}, str(turbo_root / "silence_latent.safetensors"))
    with pytest.raises(AceStepError, match=r"silence latent has shape \(1, 1000, 64\), expected \(1, 64, T\)"):
        convert_checkpoints(turbo_root.parent, tmp_path / "out")


def test_loader_names_a_missing_silence_file(converted, tmp_path):
    folder = tmp_path / "dit"
    shutil.copytree(converted / "acestep-v15-turbo", folder)
    (folder / "silence_latent.safetensors").unlink()
    with pytest.raises(AceStepError, match="silence_latent.safetensors: file not found"):
        load_silence_latent(folder)
