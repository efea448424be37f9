"""The code's layers, as the README's architecture section draws them, checked on the source:

    handgrad (ShapeError, __version__), _checks  ->  chapters ch02 … ch10  ->  datasets  ->  app  ->  cli

A module imports only from its own layer or the layers before it (a chapter only from earlier chapters),
the chapters use NumPy alone, and no module-level import cycle exists anywhere in ``src/handgrad``.
"""

import ast
import pathlib
import re

import handgrad

PACKAGE = pathlib.Path(handgrad.__file__).parent
CHAPTER = re.compile(r"^ch(\d\d)_")
OUTSIDE_NUMPY = {"torch", "PIL", "matplotlib", "tqdm", "sklearn", "scipy", "mpi4py"}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name):
    """(layer rank, chapter number or 0) of a handgrad module."""
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else ""
    m = CHAPTER.match(top)
    if m:
        return 1, int(m.group(1))
    ranks = {"": 0, "_checks": 0, "datasets": 2, "app": 3, "cli": 4, "__main__": 5}
    assert top in ranks, f"{name}: a module outside the known layers; add it to the architecture"
    return ranks[top], 0


def imports(name, path, module_level_only=False):
    """(imported handgrad module or external top-level name, line) for each import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                yield (sub if sub in MODULES else base), node.lineno
        elif module_level_only:
            stack.extend(ast.iter_child_nodes(node))


def test_every_layer_is_there():
    layers = {layer_of(n)[0] for n in MODULES}
    assert layers >= {0, 1, 2, 3, 4}
    assert {layer_of(n)[1] for n in MODULES} >= {2, 3, 4, 5, 6, 7, 8, 9}


def test_imports_point_only_to_earlier_layers():
    problems = []
    for name, path in MODULES.items():
        rank, chapter = layer_of(name)
        for target, line in imports(name, path):
            where = f"{path.relative_to(PACKAGE)}:{line}"
            if target.split(".")[0] != "handgrad":
                if rank == 1 and target.split(".")[0] in OUTSIDE_NUMPY:
                    problems.append(f"{where} imports {target}: chapters use NumPy only")
                continue
            other_rank, other_chapter = layer_of(target)
            if other_rank > rank or (rank == other_rank == 1 and other_chapter > chapter):
                problems.append(f"{where} ({name}) imports {target}, a later layer")
    assert not problems, "\n".join(problems)


def test_no_module_level_import_cycles():
    graph = {}
    for name, path in MODULES.items():
        deps = {t for t, _ in imports(name, path, module_level_only=True) if t in MODULES}
        # a submodule importing its own package's __init__ is how packages work, not a cycle
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*trail[trail.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_cycle_check_can_fail(tmp_path):
    """The checker itself: a two-module cycle written to disk is found."""
    global MODULES
    saved = MODULES
    pkg = tmp_path / "handgrad" / "app"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .a import x\n")
    try:
        MODULES = {"handgrad.app.a": pkg / "a.py", "handgrad.app.b": pkg / "b.py"}
        try:
            test_no_module_level_import_cycles()
        except AssertionError as err:
            assert "handgrad.app.a -> handgrad.app.b -> handgrad.app.a" in str(err)
        else:
            raise AssertionError("the cycle was not found")
    finally:
        MODULES = saved
