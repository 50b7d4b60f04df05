"""Check the plugin API surface and the host's import layers (run by ``tox -e lint``).

1. Plugins (``plugins/*`` and ``docs/plugins/*``) import only the declared API: names in
   ``olivine.__all__``, and the names in ``__all__`` of the modules listed in
   ``olivine.PUBLIC_MODULES``. From another plugin they import no private name (one that
   starts with ``_``, or from a module whose path has such a part).
2. The host has no import cycle at import time (module-level imports), and the modules a
   plugin builds on (errors, accelerator, options, hookspecs, models, passes, evaluation,
   systems.base) never import the engine, search, config, API, CLI or plugin loader, not
   even inside a function.

Reads sources only (``ast``): nothing is imported. Exit status 1 and one line per problem.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"
PLUGIN_ROOTS = (REPO / "plugins", REPO / "docs" / "plugins")

#: modules a plugin builds on, and what they must never import (even lazily)
LOWER = ("olivine.errors", "olivine.accelerator", "olivine.options", "olivine.hookspecs",
         "olivine.models", "olivine.passes", "olivine.evaluation", "olivine.systems.base")
UPPER = ("olivine.engine", "olivine.search", "olivine.config", "olivine.api", "olivine.cli",
         "olivine.plugins", "olivine.cache")
#: lazy edges from LOWER to UPPER that are allowed, with the reason
ALLOWED_LAZY = {("olivine.models", "olivine.plugins"):
                "handle_type loads the plugins to find a kind a plugin registers"}


def module_file(module: str) -> Path | None:
    """The source file of host module ``module`` (``olivine.x.y``)."""
    base = CORE.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def declared_all(module: str) -> set[str]:
    """The names in ``__all__`` of host module ``module`` (read from its source)."""
    path = module_file(module)
    if path is None:
        return set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert node.value is not None
            return set(ast.literal_eval(node.value))
    return set()


def public_modules() -> tuple[str, ...]:
    """``olivine.PUBLIC_MODULES``, read from the source."""
    tree = ast.parse(module_file("olivine").read_text())  # type: ignore[union-attr]
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PUBLIC_MODULES"
                                                for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def plugin_problems(path: Path, own: str, surface: dict[str, set[str]]) -> Iterator[str]:
    """Imports in ``path`` (of the plugin package ``own``) outside the declared API."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    binds_olivine = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if alias.name == "olivine":
                    binds_olivine = binds_olivine or alias.asname is None
                elif top == "olivine" and alias.name not in surface:
                    yield f"{where}:{node.lineno}: import {alias.name}: not a public olivine module"
                elif top.startswith("olivine_") and top != own and _is_private(alias.name):
                    yield f"{where}:{node.lineno}: import {alias.name}: private to plugin {top}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top == "olivine":
                allowed = surface.get(node.module)
                if allowed is None:
                    yield (f"{where}:{node.lineno}: from {node.module} import ...: not a public "
                           f"olivine module (use olivine or one of {', '.join(sorted(surface)[1:])})")
                    continue
                for alias in node.names:
                    if alias.name not in allowed:
                        yield (f"{where}:{node.lineno}: from {node.module} import {alias.name}: "
                               f"not in {node.module}.__all__")
            elif top.startswith("olivine_") and top != own:
                for alias in node.names:
                    if _is_private(node.module) or _is_private(alias.name):
                        yield (f"{where}:{node.lineno}: from {node.module} import {alias.name}: "
                               f"private to plugin {top}")
    if binds_olivine:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "olivine" and node.attr not in surface["olivine"] \
                    and f"olivine.{node.attr}" not in surface:
                yield f"{where}:{node.lineno}: olivine.{node.attr}: not in olivine.__all__"


def plugin_packages() -> Iterator[tuple[str, Path]]:
    """``(package name, folder)`` of every plugin package in this repository."""
    for root in PLUGIN_ROOTS:
        for dist in sorted(p for p in root.iterdir() if p.is_dir()):
            for pkg in sorted(dist.iterdir()):
                if pkg.is_dir() and (pkg / "__init__.py").is_file() and pkg.name != "tests":
                    yield pkg.name, dist


def api_surface() -> dict[str, set[str]]:
    """Every public module and the names it offers."""
    return {m: declared_all(m) for m in ("olivine", *public_modules())}


def check_plugins(files: Iterable[tuple[str, Path]] | None = None) -> list[str]:
    """Problems in the plugins' imports (``files``: ``(own package, file)``; default: all)."""
    surface = api_surface()
    if files is None:
        files = [(own, f) for own, dist in plugin_packages() for f in sorted(dist.rglob("*.py"))
                 if "build" not in f.relative_to(dist).parts]
    return [p for own, f in files for p in plugin_problems(f, own, surface)]


def host_modules() -> dict[str, Path]:
    """Host module name -> source file."""
    out = {}
    for path in (CORE / "olivine").rglob("*.py"):
        parts = list(path.relative_to(CORE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_edges(module: str, path: Path, modules: dict[str, Path],
                 top_level_only: bool) -> set[str]:
    """The host modules ``module`` imports (``TYPE_CHECKING`` blocks left out)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    if top_level_only:
        nodes = [n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                  ast.ClassDef))
                 for n in ast.walk(stmt)]
    else:
        nodes = list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    for node in nodes:
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base.split(".")[0] != "olivine":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else resolve(base))
        elif isinstance(node, ast.Import):
            out |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "olivine"}
    out.discard(module)
    out.discard("olivine")
    out.discard("")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_host() -> list[str]:
    """Import-time cycles in the host, and lower modules that reach up."""
    modules = host_modules()
    problems = []
    eager = {m: import_edges(m, p, modules, True) for m, p in modules.items()}
    for comp in cycles(eager):
        problems.append("import cycle at import time: " + " -> ".join(comp))
    for low in LOWER:
        edges = import_edges(low, modules[low], modules, False)
        for target in sorted(edges):
            if any(target == up or target.startswith(up + ".") for up in UPPER) \
                    and (low, target) not in ALLOWED_LAZY:
                problems.append(f"{low} imports {target}: a module plugins build on must not "
                                "depend on the engine, search, config, CLI or plugin loader")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print every problem; 1 if there are any."""
    problems = check_plugins() + check_host()
    for line in problems:
        print(line)
    if not problems:
        print(f"API surface: ok ({len(api_surface())} public modules); host layers: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
