"""The package's layers import only downward, with no circle, function-level imports included
(README's package map; DESIGN): base modules < model < measures < tasks < training < launching <
analysis < experiments < the commands (cli, bench, the package's own __init__)."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LAYERS = ("plugins", "fields", "model", "measures", "tasks", "training", "launching", "analysis", "experiments")
BASE = {"plugins": 0, "fields": 0}  # the two base modules share the bottom: neither imports the other
TOP = ("birth", "birth.__main__", "birth.cli", "birth.commands", "birth.bench", "birth.gpu_check")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "birth").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, mods: dict) -> list[tuple[str, int, bool]]:
    """(imported birth module, line, at function level) of every import statement in the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base
                if target in mods and target != name:
                    out.append((target, node.lineno, id(node) in nested))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in nested) for a in node.names if a.name in mods and a.name != name]
    return out


def _rank(module: str) -> int:
    if module in TOP:
        return len(LAYERS) + 1
    layer = module.split(".")[1]
    return BASE.get(layer, LAYERS.index(layer))


def test_every_import_points_down_or_within_its_layer():
    mods = _modules()
    upward = [f"{name}:{line} imports {target}" + (" (in a function)" if nested else "")
              for name, path in mods.items() for target, line, nested in _imports(name, path, mods)
              if _rank(target) > _rank(name)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_back_through_others():
    mods = _modules()
    graph = {name: {t for t, _, _ in _imports(name, path, mods)} for name, path in mods.items()}
    # a package's __init__ imported by its own submodules is no circle unless it imports them back
    circles = []
    for start in graph:
        seen, stack = set(), [(start, (start,))]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join(trail + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + (nxt,)))
    assert not circles, "\n".join(sorted(set(circles))[:10])


def test_a_function_level_import_of_the_package_says_why():
    """Kept only for import time (a command that must start fast, an optional extra): a comment on
    the line or the line above says so."""
    mods = _modules()
    unexplained = []
    for name, path in mods.items():
        lines = path.read_text().splitlines()
        for target, line, nested in _imports(name, path, mods):
            context = " ".join(lines[max(0, line - 2):line])
            if nested and "#" not in context:
                unexplained.append(f"{name}:{line} imports {target} in a function without a comment")
    assert not unexplained, "\n".join(unexplained)
