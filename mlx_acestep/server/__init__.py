"""`mlx-acestep serve`: the reference's REST protocol over one MLX pipeline (the `server` extra: FastAPI, uvicorn)."""


def make_app(*args, **kwargs):
    from .app import make_app as build

    return build(*args, **kwargs)


__all__ = ["make_app"]
