"""`python -m mlx_acestep ...`: the `mlx-acestep` command."""

from .cli import main

if __name__ == "__main__":
    main()
