"""The networks of ACE-Step 1.5 in MLX, one module per component, named and shaped as the reference's."""
