"""What the server tests share: the fixture turbo pipeline (a module may define its own `pipe`)."""

import pytest

from mlx_acestep.pipeline import ACEStep, ModelFolders


@pytest.fixture(scope="module")
def pipe(converted):
    return ACEStep(ModelFolders(converted / "Qwen3-Embedding-0.6B", converted / "acestep-v15-turbo", converted / "vae"))
