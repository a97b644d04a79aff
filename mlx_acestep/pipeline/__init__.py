"""From a request to audio: the `ACEStep` facade and what it runs (conditioning, planner, sampler, tasks)."""

from .acestep import ACEStep, Cancelled, GenerationResult, ModelFolders, PhaseMeter, Progress

__all__ = ["ACEStep", "Cancelled", "GenerationResult", "ModelFolders", "PhaseMeter", "Progress"]
