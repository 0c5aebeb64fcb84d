"""The shape of the code: data flows one way (core <- components), and the API's
routes only parse, call and serialise.

Imports are read from the source (every ``import`` statement, in functions
too), so a new import that breaks a rule fails here before anyone has to
find the cycle by hand.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each package's source lives (pyproject.toml's package-dir).
PACKAGES = {"opslab": "opslab", "opslab.enc": "enc", "opslab.branchrunner": "branchrunner",
            "opslab.api": "api", "opslab.api.routes": "api/routes",
            "opslab.api.pages": "api/pages",
            "opslab.agent": "instance-agent", "opslab.instances": "instances",
            "opslab.smoketests": "smoketests", "opslab.smoketests.kinds": "smoketests/kinds",
            "opslab.ci": "ci", "opslab.client": "client", "opslab.logbot": "logbot"}
COMPONENTS = ("opslab.enc", "opslab.branchrunner", "opslab.api", "opslab.agent",
              "opslab.instances", "opslab.smoketests", "opslab.ci", "opslab.client",
              "opslab.logbot")


def modules() -> dict[str, Path]:
    """Every module of opslab by its dotted name."""
    found = {}
    for package, directory in PACKAGES.items():
        for path in sorted((ROOT / directory).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports(name: str, path: Path) -> Iterator[str]:
    """The opslab modules ``name`` imports, resolved to dotted names."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("opslab"))
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = (f"{base}.{node.module}" if node.module else base) if node.level \
                else node.module or ""
            if not source.startswith("opslab"):
                continue
            # "from . import context" imports a module; "from .x import y" a name of x.
            for alias in node.names:
                yield f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source


MODULES = modules()
GRAPH = {name: set(imports(name, path)) & set(MODULES) for name, path in MODULES.items()}


def component(module: str) -> str:
    return next((c for c in COMPONENTS if module == c or module.startswith(c + ".")), "core")


def test_the_graph_is_read() -> None:
    # A reader that found nothing would pass every rule below.
    assert "opslab.api.hosts" in GRAPH["opslab.api.routes.hosts"]
    assert "opslab.directory" in GRAPH["opslab.api.directory"]
    assert "opslab.enc.classifier" in GRAPH["opslab.api.targets"]


def test_the_core_imports_no_component() -> None:
    offending = {module: sorted(target for target in targets if component(target) != "core")
                 for module, targets in GRAPH.items() if component(module) == "core"}
    assert {module: found for module, found in offending.items() if found} == {}


def test_components_depend_on_each_other_one_way() -> None:
    uses = {(component(module), component(target))
            for module, targets in GRAPH.items() for target in targets
            if component(target) not in ("core", component(module))}
    assert not {(a, b) for a, b in uses if (b, a) in uses}, uses


@pytest.mark.parametrize("start", sorted(MODULES))
def test_no_module_imports_itself_through_others(start: str) -> None:
    seen: set[str] = set()
    stack = list(GRAPH[start])
    while stack:
        module = stack.pop()
        assert module != start, f"{start} imports itself through {sorted(seen)}"
        if module not in seen:
            seen.add(module)
            stack.extend(GRAPH[module])


def test_routes_import_no_route_and_nothing_imports_routes_but_the_app() -> None:
    routes = {name for name in MODULES if name.startswith("opslab.api.routes.")}
    offending = {module: sorted(GRAPH[module] & routes) for module in MODULES
                 if module != "opslab.api.app" and GRAPH[module] & routes}
    assert offending == {}


def test_every_package_of_the_distribution_is_read() -> None:
    """A package missing here would escape every rule above (pyproject.toml's list)."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(declared["packages"]) == set(PACKAGES)
