"""The architecture of docs/architecture.md, checked on the source: which package may import which,
the order of the modules inside ``core``, no import circles, no private names across modules, and
no printing outside ``cli``. Every import counts, including those inside functions (lazy imports
are still dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lineagestore"

# Packages (or top-level modules) and what each may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "guard": {"core"},
    "versions": {"core"},
    "data": {"core", "versions"},
    "remote": {"core", "versions"},
    "train": {"core", "guard", "versions", "data"},
    "queue": {"core", "versions", "data"},
    "runner": {"core", "guard", "versions", "data", "train", "queue"},
    "analytics": {"core", "versions", "data", "train", "queue"},
    "dashboard": {"core", "guard", "versions", "data", "remote", "train", "queue", "analytics"},
    "api": {"core", "guard", "versions", "data", "remote", "train", "queue", "runner", "analytics"},
    "integrations": {"core", "versions", "data", "train", "api"},
    "cli": {"core", "guard", "versions", "data", "remote", "train", "queue", "runner", "analytics",
            "dashboard", "api", "cli"},
}

# The store core, bottom to top: a module imports only modules of its own or a lower rank.
CORE_ORDER: dict[str, int] = {
    "errors": 1, "progress": 1, "environment": 1, "fsutil": 1,
    "ids": 2, "names": 2, "objects": 2, "safetensors_io": 2, "settings": 2, "codecs": 2,
    "content": 3, "loose": 3, "packs": 3,
    "store_base": 4, "store": 4,
    "refs": 5,
    "repo": 6, "audit": 6,
    "publish": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of a lineagestore module."""
    me = module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    package = [p for p in package if p]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and (node.module == "lineagestore" or node.module.startswith("lineagestore.")):
                target = node.module[len("lineagestore."):] if "." in node.module else ""
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}".strip(".") for n in names if f"{target}.{n}".strip(".") in modules]
            if submodules:  # "from . import x": x is a module
                out.extend((m, [], node.lineno) for m in submodules)
                names = [n for n in names if f"{target}.{n}".strip(".") not in modules]
                if not names:
                    continue
            out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lineagestore."):
                    out.append((alias.name[len("lineagestore."):], [], node.lineno))
    return out


def owner(module: str, modules: dict[str, Path]) -> str:
    """The module a dotted name refers to (a package's names live in its __init__)."""
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module


def package_of(module: str) -> str:
    return module.split(".")[0] if module else ""


def edges() -> list[tuple[str, str, list[str], int]]:
    modules = all_modules()
    out = []
    for me, path in modules.items():
        for target, names, line in imports_of(path, modules):
            out.append((me, owner(target, modules), names, line))
    return out


def test_packages_import_only_what_they_may():
    violations = []
    for me, target, _names, line in edges():
        mine, theirs = package_of(me), package_of(target)
        if not me or not theirs or mine == theirs:
            continue
        if theirs not in ALLOWED.get(mine, set()):
            violations.append(f"{me}:{line} ({mine}) imports {target} ({theirs})")
    assert not violations, "package layering violations:\n" + "\n".join(violations)


def test_core_modules_in_order():
    violations = []
    for me, target, _names, line in edges():
        if package_of(me) != "core" or package_of(target) != "core" or me == "core" or target == "core":
            continue
        a, b = me.split(".")[1], target.split(".")[1]
        if CORE_ORDER[b] > CORE_ORDER[a]:
            violations.append(f"{me}:{line} (rank {CORE_ORDER[a]}) imports {target} (rank {CORE_ORDER[b]})")
    assert not violations, "core order violations:\n" + "\n".join(violations)


def test_core_order_covers_every_core_module():
    core = {m.split(".")[1] for m in all_modules() if m.startswith("core.")}
    assert core == set(CORE_ORDER), (core ^ set(CORE_ORDER))


def test_no_import_circles():
    graph: dict[str, set[str]] = {}
    for me, target, _names, _line in edges():
        if target and target != me and not me.startswith(target + ".") and target != "":
            graph.setdefault(me, set()).add(target)
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    circles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_no_private_names_across_modules():
    violations = []
    for me, target, names, line in edges():
        if target == me:
            continue
        for n in names:
            if n.startswith("_") and not (n.startswith("__") and n.endswith("__")):
                violations.append(f"{me}:{line} imports private {n} from {target}")
    assert not violations, "\n".join(violations)


def test_library_never_imports_cli():
    bad = [f"{me}:{line} imports {target}" for me, target, _n, line in edges()
           if package_of(me) != "cli" and package_of(target) == "cli"]
    assert not bad, "\n".join(bad)


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


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """A deliberately bad import is found: the rules above are not vacuous."""
    fake = tmp_path / "lineagestore"
    (fake / "versions").mkdir(parents=True)
    (fake / "remote").mkdir()
    (fake / "cli").mkdir()
    for d in ("", "versions", "remote", "cli"):
        (fake / d / "__init__.py").write_text("")
    (fake / "remote" / "push.py").write_text("X = 1\n")
    (fake / "cli" / "main.py").write_text("Y = 1\n")
    (fake / "versions" / "history.py").write_text(
        "from ..remote import push\nfrom ..cli.main import Y\nfrom ..remote.push import _secret\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    found = {(me, t) for me, t, _n, _l in edges()}
    assert ("versions.history", "remote.push") in found
    assert ("versions.history", "cli.main") in found
    assert any(n == ["_secret"] for _m, _t, n, _l in edges())
