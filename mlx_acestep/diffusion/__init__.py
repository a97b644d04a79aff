"""Flow matching for ACE-Step 1.5, below the pipeline and training."""
