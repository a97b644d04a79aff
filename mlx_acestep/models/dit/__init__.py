"""The DiT checkpoint (`acestep-v15-*`): decoder, condition encoder, FSQ tokenizer and detokenizer."""

from .config import AceStepConfig
from .model import DIT_PARTS, AceStepModel, PreparedCondition

__all__ = ["DIT_PARTS", "AceStepConfig", "AceStepModel", "PreparedCondition"]
