"""The repo's import layers, read from its folders: scripts (the .py files at the top, but config.py) -> pipeline/ ->
models/ -> config.py, which imports only the standard library. Imports point down (or sideways within a folder,
without a circle), no module imports a script, and every module imports alone, first, in a fresh interpreter."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules_in(folder):
    path = os.path.join(REPO, folder)
    prefix = f"{folder}." if folder else ""
    return sorted(prefix + name[:-3] for name in os.listdir(path) if name.endswith(".py") and name != "__init__.py")


SCRIPTS = [m for m in modules_in("") if m != "config"]
LAYERS = [SCRIPTS, modules_in("pipeline"), modules_in("models"), ["config"]]  # top to bottom
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


def test_the_top_level_holds_the_scripts_and_config_only():
    assert SCRIPTS == ["benchmark", "demo", "evaluate", "generator", "transformer_train", "vqvae_train"], \
        "shared code belongs in pipeline/, a network module in models/; a new script goes in docs/layout.md"


def test_config_imports_only_the_standard_library():
    tree = ast.parse(open(module_path("config")).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


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


# One fresh interpreter imports the third-party packages once, then forks a child per module: each child starts with
# no module of the repo imported, so it imports its module alone and first, as a fresh interpreter would, without
# paying torch's import again for every module.
IMPORT_EACH_ALONE = """
import importlib, os, sys
import numpy, PIL.Image, torch, tqdm
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException as e:
            print(f"{module}: {type(e).__name__}: {e}".splitlines()[0], flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        print(f"{module}: its import did not finish", flush=True)
"""


def test_each_module_imports_alone_in_a_fresh_interpreter():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE, *LAYER_OF], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout
