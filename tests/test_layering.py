"""The book's order is the import order: a chapter may import earlier chapters, never a later one."""

import ast
import pathlib
import re

import handgrad

PACKAGE = pathlib.Path(handgrad.__file__).parent
CHAPTER = re.compile(r"ch(\d\d)_")


def chapter_of(module_name):
    m = CHAPTER.search(module_name)
    return int(m.group(1)) if m else None


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")
            for alias in node.names:
                yield alias.name


def chapter_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        number = chapter_of(rel.parts[0])
        if number is not None:
            yield path, number


def test_there_are_chapters_to_check():
    assert {n for _, n in chapter_files()} >= {2, 3, 4, 5, 6, 7, 8}


def test_chapters_import_only_earlier_chapters_and_numpy():
    problems = []
    for path, number in chapter_files():
        for name in imported_modules(path):
            other = chapter_of(name)
            if other is not None and other > number:
                problems.append(f"{path.name} (ch{number:02d}) imports {name}")
            top = name.lstrip(".").split(".")[0]
            if top in {"torch", "PIL", "matplotlib", "tqdm", "sklearn", "scipy"}:
                problems.append(f"{path.name} imports {top}: chapters use NumPy only")
            if top in {"app", "datasets", "cli"} or name.startswith("handgrad.app"):
                problems.append(f"{path.name} imports the application ({name})")
    assert not problems, "\n".join(problems)
