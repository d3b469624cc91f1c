"""Dependencies point one way: ``estimator`` <- ``profiler`` <- ``app``, and inside ``app`` by
capability. Every import counts, at module level or inside a function (a function-level import is
a dependency all the same, only hidden).

Inside ``app``::

    main, cli  ->  api, web  ->  jobs  ->  planning  ->  core
                         \\->  reports  ->  planning, core

Only ``main`` and ``cli`` see ``api`` or ``web``. A module-level cycle anywhere fails too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"estimator": ROOT / "estimator", "profiler": ROOT / "profiler", "app": ROOT / "app"}
ENTRY_POINTS = ("main", "cli")
# What each part of app may import from the rest of app (entry points: anything).
ALLOWED = {
    "core": set(),
    "hub": {"core"},
    "planning": {"core", "hub"},
    "jobs": {"core", "planning", "hub"},
    "reports": {"core", "planning"},
    "api": {"core", "planning", "jobs", "reports", "hub"},
    "web": {"core", "planning", "jobs", "reports", "hub"},
}
# What each top-level package may import from the project.
ALLOWED_PACKAGES = {"estimator": set(), "profiler": {"estimator"}, "app": {"estimator", "profiler"}}


def module_name(path: Path, package_dir: Path, package: str) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def modules_of(package_dir: Path, package: str) -> dict[str, Path]:
    return {module_name(p, package_dir, package): p for p in sorted(package_dir.rglob("*.py"))}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module ``module`` imports, anywhere in its body; ``from x import y`` yields ``x.y``
    too (``y`` may be a submodule: the caller keeps the names that are modules)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(package_dirs: dict[str, Path], prefix: str) -> dict[str, set[str]]:
    """Module -> the project's modules it imports, names relative to ``prefix`` (``tunefit.``)."""
    modules: dict[str, Path] = {}
    for package, directory in package_dirs.items():
        modules.update(modules_of(directory, package))
    graph = {}
    for module, path in modules.items():
        found = set()
        for name in imported_names(path, prefix + module):
            if name.startswith(prefix) and name[len(prefix):] in modules:
                found.add(name[len(prefix):])
        # A module's own packages are imported before it runs (``from . import x`` names one): no edge.
        graph[module] = {t for t in found if t != module and not module.startswith(t + ".")}
    return graph


def layer(module: str) -> str:
    """``app.jobs.worker`` -> ``jobs``; ``app.main`` -> ``main``."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imports in graph.items():
        top = module.split(".")[0]
        for target in imports:
            target_top = target.split(".")[0]
            if target_top != top and target_top not in ALLOWED_PACKAGES[top]:
                found.append(f"{module} -> {target}")
            elif top == target_top == "app" and module.count(".") and target.count("."):
                source, sink = layer(module), layer(target)
                if source in ENTRY_POINTS or source == sink or sink == "":
                    continue
                if sink not in ALLOWED.get(source, set()):
                    found.append(f"{module} -> {target}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def project_graph() -> dict[str, set[str]]:
    return import_graph(PACKAGES, "tunefit.")


def test_the_graph_sees_function_level_imports(project_graph):
    """The CLI loads the profiler and the fleet only when a command needs them: still edges."""
    assert "app.jobs.fleet" in project_graph["app.jobs.executor"]
    assert "profiler" in project_graph["app.cli"] or any(t.startswith("profiler.") for t in project_graph["app.cli"])


def test_dependencies_point_one_way(project_graph):
    assert direction_violations(project_graph) == []


def test_no_import_cycles(project_graph):
    assert cycles(project_graph) == []


# estimator/families/: one module per model family beside the parts they share.
SHARED_FAMILY_PARTS = {"estimator.families.config", "estimator.families.layers", "estimator.families.moe",
                       "estimator.families.towers"}


def test_the_families_read_the_specs_and_the_registry_reads_the_families(project_graph):
    """``estimator.arch`` gathers every family module's builders into its registry, so no family
    module may import it back: they take the facts' types from ``estimator.spec``, and the shared
    parts never import a family."""
    families = {m for m in project_graph if m.startswith("estimator.families.")}
    assert not any("estimator.arch" in project_graph[m] for m in families)
    assert not any(t in families - SHARED_FAMILY_PARTS for m in SHARED_FAMILY_PARTS for t in project_graph[m])
    assert families - SHARED_FAMILY_PARTS <= project_graph["estimator.arch"]


def test_only_the_entry_points_see_api_and_web(project_graph):
    seeing = {m for m, imports in project_graph.items()
              if any(layer(t) in ("api", "web") for t in imports if t.startswith("app."))
              and layer(m) not in ("api", "web")}
    assert seeing <= {"app.main", "app.cli"}


# The layout before the packages by capability, reduced to its imports: the checks must refuse it.
FLAT_LAYOUT = {
    "app/__init__.py": "",
    "app/jobs.py": "from .services import run_estimate\n",
    "app/services.py": "def worker_list():\n    from .fleet import list_workers\n    from .jobs import local_workers\n",
    "app/fleet.py": "def _profile_task():\n    from .jobs import run_job\n",
    "app/report_views.py": "from .charts import histogram\n",
    "app/charts.py": "",
    "app/api/__init__.py": "",
    "app/api/v1.py": "from .. import jobs, services\nfrom ..report_views import report_json\n",
    "app/web.py": "from .api.deps import guard_job_creation\n",
    "app/api/deps.py": "from ..jobs import Dispatch\n",
}


@pytest.fixture
def flat_graph(tmp_path) -> dict[str, set[str]]:
    for name, text in FLAT_LAYOUT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return import_graph({"app": tmp_path / "app"}, "tunefit.")


def test_the_checks_refuse_the_flat_layouts_cycles(flat_graph):
    assert cycles(flat_graph) == [["app.fleet", "app.jobs", "app.services"]]


def test_the_checks_refuse_a_module_outside_the_layers_seeing_api(flat_graph):
    """``web.py`` (a module of its own then) imported ``api.deps``."""
    assert "app.web -> app.api.deps" in direction_violations(flat_graph)


@pytest.mark.parametrize("source,target,allowed", [
    ("app.planning.service", "app.jobs.service", False),
    ("app.jobs.service", "app.planning.service", True),
    ("app.reports.documents", "app.web.charts", False),
    ("app.api.routes.reports", "app.reports.documents", True),
    ("app.core.db", "app.planning.schemas", False),
    ("app.cli", "app.web.routes", True),
    ("estimator.arch", "profiler.build", False),
    ("profiler.build", "app.core.config", False),
], ids=lambda x: str(x))
def test_each_edge_is_judged_by_the_direction(source, target, allowed):
    assert (direction_violations({source: {target}}) == []) is allowed
