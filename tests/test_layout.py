"""The repo's import layers: scripts -> library -> models -> bottom (config, datasets, fetch, files). Imports point
down (or sideways within a layer, without a circle), no script is imported by another module, and every module
imports alone, first, in a fresh interpreter."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["vqvae_train", "transformer_train", "generator", "evaluate", "benchmark"]
LAYERS = [  # top to bottom
    SCRIPTS,
    ["recipe", "sampling", "training", "figures", "report", "metrics", "utilization", "image_files", "checkpoint", "data",
     "token_cache", "distributed", "device"],
    sorted(f"models.{name[:-3]}" for name in os.listdir(os.path.join(REPO, "models"))
           if name.endswith(".py") and name != "__init__.py"),
    ["config", "datasets", "fetch", "image_folder", "files"],
]
LAYER_OF = {module: depth for depth, modules in enumerate(LAYERS) for module in modules}


def module_path(module):
    return os.path.join(REPO, *module.split(".")) + ".py"


def repo_imports(module):
    """The repo's modules that `module` imports anywhere in its file (top level or inside a function)."""
    tree = ast.parse(open(module_path(module)).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in LAYER_OF)
    return found - {module}


def test_every_module_is_in_a_layer():
    on_disk = {name[:-3] for name in os.listdir(REPO) if name.endswith(".py")}
    assert on_disk - set(LAYER_OF) == set(), "a new top-level module: add it to a layer here and in docs/layout.md"
    assert all(os.path.exists(module_path(m)) for m in LAYER_OF), "a module listed here is gone"


@pytest.mark.parametrize("module", list(LAYER_OF))
def test_imports_point_down_and_never_at_a_script(module):
    for imported in repo_imports(module):
        assert imported not in SCRIPTS, f"{module} imports the script {imported}; move what it needs to the library"
        assert LAYER_OF[imported] >= LAYER_OF[module], f"{module} imports {imported}, a layer above it"


def test_the_import_graph_has_no_circle():
    graph = {m: repo_imports(m) for m in LAYER_OF}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_each_module_imports_alone_in_a_fresh_interpreter():
    modules = list(LAYER_OF)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [(m, subprocess.Popen([sys.executable, "-c", f"import {m}"], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for m in modules]
    failed = {}
    for module, process in running:
        _, err = process.communicate(timeout=300)
        if process.returncode != 0:
            failed[module] = err.strip().splitlines()[-1]
    assert not failed, failed
