"""The test suite's own layout, checked on the test files' source (parsed, never imported):

- only modules named ``*_torch.py`` import PyTorch, at any level (inside functions too), and no other
  module imports one of them, so every other test module runs where torch is not installed;
- each chapter test module ``test_chNN_<name>.py`` (or ``test_chNN_<name>_torch.py``) is named after a
  module of ``src/handgrad``: ``chNN_<name>.py``, or ``<name>.py`` in the package ``chNN_*/``, so that
  renaming a source module shows up here.
"""

import ast
import pathlib
import re

import handgrad

TESTS = pathlib.Path(__file__).parent
PACKAGE = pathlib.Path(handgrad.__file__).parent
TEST_FILES = sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)
CHAPTER_TEST = re.compile(r"^test_(ch\d\d)_(\w+?)(_torch)?\.py$")
DYNAMIC_IMPORTS = {"import_module", "importorskip", "__import__"}


def imported_names(path):
    """(top-level module name, line) for each import in the file, at any depth, including
    ``importlib.import_module("x")``, ``pytest.importorskip("x")`` and ``__import__("x")``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name.split(".")[0], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module.split(".")[0], node.lineno
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in DYNAMIC_IMPORTS and isinstance(node.args[0].value, str):
                yield node.args[0].value.split(".")[0], node.lineno


def test_only_torch_modules_import_torch():
    offenders = []
    for path in TEST_FILES:
        if path.name.endswith("_torch.py"):
            continue
        for name, line in imported_names(path):
            if name == "torch" or name.endswith("_torch"):
                offenders.append(f"{path.relative_to(TESTS)}:{line} imports {name}")
    assert not offenders, (
        "only modules named *_torch.py may import torch (or a *_torch module); move these tests into "
        "the module's *_torch.py twin:\n" + "\n".join(offenders)
    )


def source_modules_of_chapter(chapter):
    """The names a chapter's test modules may carry: chNN_<name>.py itself, or chNN_*/<name>.py."""
    names = {p.stem for p in PACKAGE.glob(f"{chapter}_*.py")}
    for package in (p for p in PACKAGE.glob(f"{chapter}_*") if p.is_dir()):
        names |= {f"{chapter}_{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    return names


def test_chapter_test_modules_are_named_after_source_modules():
    assert TEST_FILES and PACKAGE.joinpath("ch06_feedforward", "layers.py").exists()  # the check has inputs
    strays = []
    for path in TEST_FILES:
        match = CHAPTER_TEST.match(path.name)
        if re.match(r"test_ch\d", path.name) and not match:
            strays.append(f"{path.name}: not test_chNN_<module>[_torch].py")
        elif match:
            chapter, name = match.group(1), match.group(2)
            known = source_modules_of_chapter(chapter)
            if f"{chapter}_{name}" not in known:
                strays.append(f"{path.name}: no module {chapter}_{name}; {chapter} has {sorted(known)}")
    assert not strays, "each chapter test module is named after the module it tests:\n" + "\n".join(strays)
