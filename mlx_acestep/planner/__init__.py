"""The 5 Hz planner LM: its prompts and audio-code phase (`lm.py`) and its constrained metadata block
(`constraint.py`)."""
