"""What the DiT is conditioned on, shared by generation and training: the reference's prompts
(`prompts.py`), the batch items and the text / timbre / code-hint inputs (`inputs.py`), and the six tasks'
context latents and edit settings (`tasks.py`)."""
