"""The package's layout (docs/architecture.md): every module in its layer's folder, imports only
downward or within a folder, no cycles. Imports inside functions count as much as those at the top
of a module: a cycle hidden in a function is still a cycle.

    errors < core < data < engine < evaluation < interop < course < cli
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "jepa_lite"
ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("errors", "core", "data", "engine", "evaluation", "interop", "course", "cli")
FOLDERS = ("core", "data", "engine", "evaluation", "interop", "course")
TOP_LEVEL_FILES = {"__init__.py": None, "__main__.py": "cli", "errors.py": "errors", "cli.py": "cli"}


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}


def layer(module: str) -> int:
    """The module's rank in LAYERS; -1 for the package itself (its __init__, which imports nothing)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    name = parts[1]
    if name == "__main__":
        name = "cli"
    return LAYERS.index(name)


def imports(path: Path, package_dir: Path, known: set[str]) -> list[tuple[int, str, bool]]:
    """(line, imported module of the package, relative?) for every import in the file, at any depth.
    `from jepa_lite.core import masks` imports the module jepa_lite.core.masks."""
    package = package_dir.name
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    found.append((node.lineno, _known_prefix(alias.name, known), False))
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                  # relative: resolve it, and report it
                here = module_name(path, package_dir).split(".")
                if path.name != "__init__.py":
                    here.pop()                              # the package that holds the module
                anchor = here[:len(here) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == package or target.startswith(package + ".")):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.append((node.lineno, full if full in known else _known_prefix(target, known), bool(node.level)))
    return found


def _known_prefix(name: str, known: set[str]) -> str:
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or name


def import_graph(package_dir: Path) -> tuple[dict[str, set[str]], list[str]]:
    """module -> the package's modules it imports; and one line per relative import."""
    found = modules(package_dir)
    graph, relative = {}, []
    for name, path in found.items():
        graph[name] = set()
        for line, target, is_relative in imports(path, package_dir, set(found)):
            if target != name:
                graph[name].add(target)
            if is_relative:
                relative.append(f"{path.relative_to(package_dir.parent)}:{line} imports {target} relatively")
    return graph, relative


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_imports(package_dir: Path) -> list[str]:
    """One line per import of a higher layer than the importing module's."""
    found = modules(package_dir)
    bad = []
    for name, path in found.items():
        for line, target, _ in imports(path, package_dir, set(found)):
            if target in found and layer(target) > layer(name):
                bad.append(f"{path.relative_to(package_dir.parent)}:{line}: {name} ({LAYERS[layer(name)]}) imports "
                           f"{target} ({LAYERS[layer(target)]}), a higher layer")
    return bad


def misplaced(package_dir: Path) -> list[str]:
    """Modules outside the layer folders (other than the allowed top-level files), folders without
    an __init__.py, and folder __init__.py files that import from the package (no re-exports)."""
    bad = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).parts
        if len(parts) == 1:
            if parts[0] not in TOP_LEVEL_FILES:
                bad.append(f"{path.relative_to(package_dir.parent)}: a top-level module; it belongs in one of "
                           f"{', '.join(f + '/' for f in FOLDERS)}")
        elif len(parts) != 2 or parts[0] not in FOLDERS:
            bad.append(f"{path.relative_to(package_dir.parent)}: not in a layer folder ({', '.join(FOLDERS)})")
    for folder in FOLDERS:
        init = package_dir / folder / "__init__.py"
        if not init.is_file():
            bad.append(f"{package_dir.name}/{folder}/ has no __init__.py")
    found = modules(package_dir)
    for path in found.values():
        if path.name == "__init__.py" and imports(path, package_dir, set(found)):
            bad.append(f"{path.relative_to(package_dir.parent)} imports from the package (folders re-export nothing)")
    return bad


# ---------------------------------------------------------------------------------------------
# the package

def test_every_module_lives_in_its_layer_folder():
    problems = misplaced(ROOT / PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    graph, _ = import_graph(ROOT / PACKAGE)
    found = cycles(graph)
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_point_only_down_or_within_a_folder():
    problems = upward_imports(ROOT / PACKAGE)
    assert not problems, "\n".join(problems)


def test_imports_are_absolute():
    _, relative = import_graph(ROOT / PACKAGE)
    assert not relative, "use absolute imports (from jepa_lite.core.masks import MaskSampler):\n" + "\n".join(relative)


def test_errors_and_the_package_init_import_nothing():
    graph, _ = import_graph(ROOT / PACKAGE)
    assert graph[f"{PACKAGE}.errors"] == set()
    assert graph[PACKAGE] == set()                         # the package's __init__ stays light


def test_docs_architecture_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(ROOT / PACKAGE)) for path in sorted((ROOT / PACKAGE).rglob("*.py"))
               if path.name != "__init__.py" and str(path.relative_to(ROOT / PACKAGE)) not in text]
    assert not missing, f"docs/architecture.md has a line per module; missing: {', '.join(missing)}"


# ---------------------------------------------------------------------------------------------
# the checks themselves fail on a package that breaks the rules

@pytest.fixture
def broken(tmp_path) -> Path:
    package = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "errors.py": "",
        "cli.py": "from jepa_lite.course.runner import run\n",
        "stray.py": "",                                                        # not in a folder
        "core/__init__.py": "from jepa_lite.core.masks import Sampler\n",      # a re-export
        "core/masks.py": "def f():\n    from jepa_lite.engine import train\n",  # upward, in a function
        "data/__init__.py": "",
        "data/datasets.py": "def g():\n    from jepa_lite.data.imagefolder import load\n",
        "data/imagefolder.py": "from jepa_lite.data.datasets import ImageDataset\n",   # cycle with datasets
        "engine/__init__.py": "",
        "engine/train.py": "from . import distributed\n",                      # relative
        "engine/distributed.py": "import jepa_lite.engine.train\n",             # cycle with train
        "course/runner.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_checks_find_cycles_upward_and_relative_imports_and_strays(broken):
    graph, relative = import_graph(broken)
    assert cycles(graph) == [["jepa_lite.data.datasets", "jepa_lite.data.imagefolder"],
                             ["jepa_lite.engine.distributed", "jepa_lite.engine.train"]]
    assert len(upward_imports(broken)) == 1 and "jepa_lite.core.masks (core) imports jepa_lite.engine.train" \
        in upward_imports(broken)[0]
    assert relative == ["jepa_lite/engine/train.py:1 imports jepa_lite.engine.distributed relatively"]
    problems = "\n".join(misplaced(broken))
    for expected in ("jepa_lite/stray.py", "evaluation/ has no __init__.py", "course/ has no __init__.py",
                     "jepa_lite/core/__init__.py imports from the package"):
        assert expected in problems


def test_one_training_step_reads_in_three_files_of_about_1200_lines():
    """docs/architecture.md: the step and its loop, the batch and masks, and the JEPA itself; each file
    about 300-400 lines (one sitting), together at most ~1200."""
    package = ROOT / PACKAGE
    files = ["engine/train.py", "engine/train_data.py", "core/objective.py"]
    lines = {name: len((package / name).read_text().splitlines()) for name in files}
    assert sum(lines.values()) <= 1200 and max(lines.values()) <= 450, lines
    step = (package / "engine/train.py").read_text().split("def train_step", 1)[1].split("\n    def ", 1)[0]
    for part in ("self.batches(", "self.forward(", ".backward()", "self.optimizer", "update_target"):
        assert part in step, part
