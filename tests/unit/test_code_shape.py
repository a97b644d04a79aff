"""The code's shape (issue 25): small modules, small functions, and training and the server use the pipeline only
through its public names, so the pipeline's inside can change without them.

Read from the source as committed (formatted by `ruff format`), never imported.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mlx_acestep"
MAX_MODULE_LINES = 400  # lines of a module as formatted
MAX_FUNCTION_LINES = 80  # a def or async def, methods and nested functions too, from `def` to its last line
PIPELINE = "mlx_acestep.pipeline"
PUBLIC_PIPELINE_MODULES = ("request",)  # GenerationRequest's module: the public request type and its checks
KEPT_OUT = ("training", "server")  # packages that may use the pipeline's public names only


def sources() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def public_pipeline_names() -> set[str]:
    """The keys of `_EXPORTS` in mlx_acestep/pipeline/__init__.py: what `mlx_acestep.pipeline` offers."""
    tree = ast.parse((PACKAGE / "pipeline" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return {ast.literal_eval(key) for key in node.value.keys}
    raise AssertionError("mlx_acestep/pipeline/__init__.py has no _EXPORTS")


def imported_names(name: str, path: Path) -> list[str]:
    """Every `module` and `module.name` that `name` imports, relative imports made absolute, wherever the import is."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            found += [f"{module}.{a.name}" for a in node.names]
    return found


def reaches_inside_the_pipeline(imported: str, public: set[str]) -> bool:
    if not imported.startswith(PIPELINE + "."):
        return False
    first = imported[len(PIPELINE) + 1 :].split(".")[0]
    return first not in public and first not in PUBLIC_PIPELINE_MODULES


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in sources().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_line_limit():
    long = {}
    for name, path in sources().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{name}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_training_and_the_server_use_only_the_pipelines_public_names():
    public = public_pipeline_names()
    bad = {
        name: inside
        for name, path in sources().items()
        if name.split(".")[1:2] and name.split(".")[1] in KEPT_OUT
        if (inside := [m for m in imported_names(name, path) if reaches_inside_the_pipeline(m, public)])
    }
    assert not bad, f"imports of pipeline internals (public: {sorted(public)} and {PUBLIC_PIPELINE_MODULES}): {bad}"
