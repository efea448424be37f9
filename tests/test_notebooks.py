"""The chapter notebooks (``notebooks/chNN_<topic>.ipynb``): each runs top to bottom, and is stored clean.

Each notebook is executed by a fresh Jupyter kernel (nbclient) in a temporary folder, so nothing is
written into the repository; the test fails when a cell raises, and every notebook ends with assertions
on its own numbers, so one that runs but shows the wrong thing fails too. The kernel inherits this
process's environment with this checkout's ``src`` first on ``PYTHONPATH`` (the test checks that the
kernel imported the same ``handgrad``), and ``HANDGRAD_DATA``, when set, makes the notebooks use the
real MNIST files instead of the bundled sample. BLAS runs on one thread unless the environment says
otherwise: the suite shares its cores, where a second BLAS thread costs far more than it gains.
"""

import os
import pathlib
import re

import pytest

import handgrad

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = pathlib.Path(handgrad.__file__).resolve().parent
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
NAME = re.compile(r"^ch(\d\d)_[a-z0-9_]+\.ipynb$")
THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CELL_TIMEOUT = 300  # seconds; each notebook is meant to take well under a minute


def chapters_in_the_package():
    """The chapter numbers the code has: chNN_* modules and packages, 11 for app/tools, 12 for MPI."""
    numbers = {int(m.group(1)) for p in PACKAGE.iterdir() if (m := re.match(r"^ch(\d\d)_", p.name))}
    if (PACKAGE / "app" / "tools").is_dir():
        numbers.add(11)
    if (PACKAGE / "app" / "distributed.py").is_file():
        numbers.add(12)
    return numbers


def test_one_notebook_per_chapter():
    assert PATHS, f"no notebooks in {NOTEBOOKS}"
    misnamed = [p.name for p in PATHS if not NAME.match(p.name)]
    assert not misnamed, f"notebooks are named chNN_<topic>.ipynb: {misnamed}"
    numbers = [int(NAME.match(p.name).group(1)) for p in PATHS]
    assert len(numbers) == len(set(numbers)), f"one notebook per chapter: {[p.name for p in PATHS]}"
    missing = chapters_in_the_package() - set(numbers)
    assert not missing, f"chapters without a notebook: {sorted(missing)}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_stored_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Chapter")
    assert any("$" in c.source for c in nb.cells if c.cell_type == "markdown"), "no equations in Markdown"
    assert "assert" in nb.cells[-1].source, f"{path.name} must end with assertions on its numbers"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    src = str(PACKAGE.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name in THREADS:  # one BLAS thread: on shared cores, more threads make the SVDs many times slower
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import handgrad\nprint(handgrad.__file__)"))
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell raised\n{e}", pytrace=False)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert pathlib.Path(printed).resolve() == PACKAGE / "__init__.py", "the kernel imported another handgrad"
    assert not list(NOTEBOOKS.glob("*.png")) and not (NOTEBOOKS / "runs").exists()
