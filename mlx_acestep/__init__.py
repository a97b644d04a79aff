"""ACE-Step 1.5 in MLX."""

__version__ = "0.1.0"

from .errors import AceStepError  # noqa: E402
from .loading import load_component  # noqa: E402
from .oobleck import AutoencoderOobleck, OobleckConfig  # noqa: E402

__all__ = ["AceStepError", "AutoencoderOobleck", "OobleckConfig", "load_component", "__version__"]
