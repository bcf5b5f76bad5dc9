"""The layering of docs/DESIGN: each module imports only modules of its own or a lower layer."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lineagestore"

LAYERS = {
    "errors": 1, "progress": 1, "fsutil": 1,
    "hashing": 2, "objects": 2, "names": 2, "config": 2, "safetensors_io": 2,
    "store": 3,
    "refs": 4,
    "repo": 5,
    "api": 7, "integrations": 7,  # what users import
    "cli": 8,
}
FEATURE = 6  # every other module or package: models, versions, data, gc, train, remote, ...


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS.get(top, FEATURE)


def imports_of(path: Path) -> list[tuple[str, int]]:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    package = parts[:-1] if path.name != "__init__.py" else parts
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, node.module] if node.module else base)
                if not target:  # "from . import x"
                    for alias in node.names:
                        out.append((alias.name, node.lineno))
                    continue
                if node.module is None:
                    for alias in node.names:
                        out.append((f"{target}.{alias.name}", node.lineno))
                    continue
                out.append((target, node.lineno))
            elif node.module and node.module.startswith("lineagestore."):
                out.append((node.module[len("lineagestore."):], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lineagestore."):
                    out.append((alias.name[len("lineagestore."):], node.lineno))
    return out


def test_layering_holds():
    violations = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "__init__.py":
            continue
        me = layer_of(".".join(rel.with_suffix("").parts))
        for target, line in imports_of(path):
            if not target or target.split(".")[0] == "__init__":
                continue
            other = layer_of(target)
            if other > me:
                violations.append(f"{rel}:{line} (layer {me}) imports {target} (layer {other})")
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_library_code_never_prints():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "input"):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, "print()/input() outside cli/: " + ", ".join(offenders)


def test_layer_table_covers_the_core_modules():
    for name in LAYERS:
        if name not in ("cli", "integrations"):
            assert (PKG / f"{name}.py").exists(), name
