"""The package's imports: no import cycles, no PyTorch-side imports at run time, a light command line (the
modules' and functions' sizes: test_code_shape.py).

The import graph is read from the source (module-level and function-level imports alike, so a cycle
cannot hide inside a function).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mlx_acestep"
REFERENCE_ONLY = ("torch", "diffusers", "matplotlib", "peft")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict | None = None) -> list[str]:
    """Every module `name` imports (absolute names), wherever the import statement is.

    `from pkg import sub` counts as importing `pkg.sub` (not `pkg`) when `sub` is a module of `known`."""
    known = known or {}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            found += subs if len(subs) == len(node.names) else [module, *subs]
    return found


def test_no_import_cycles():
    mods = modules()
    graph = {
        name: sorted({m for m in imports(name, path, mods) if m in mods and m != name}) for name, path in mods.items()
    }
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_nothing_at_run_time_imports_the_pytorch_side():
    bad = [
        (name, m) for name, path in modules().items() for m in imports(name, path) if m.split(".")[0] in REFERENCE_ONLY
    ]
    assert not bad, bad


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["generate", "--help"], ["convert", "--help"]])
def test_the_command_line_starts_without_mlx_lm_or_transformers(args):
    code = (
        "import sys\nfrom mlx_acestep.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('mlx_lm', 'transformers', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
