"""The single-file build (``scripts/build_single_file.py``, design report §2.1).

The file is built into a temporary folder and imported in a fresh interpreter in which ``handgrad`` cannot
be imported at all; it must train the same MLP on the same synthetic data to the same losses, bit for bit,
as the package does, and its functions must come from lines of the file that read as the package's own.
"""

import ast
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

import handgrad

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_single_file.py"
SRC = pathlib.Path(handgrad.__file__).resolve().parent.parent
NAME = "COMPLETE_CODE_CONSOLIDATED"

# Run as `python - MODULE RUN_DIR`: train a small MLP and print its losses and where its code came from.
TRAIN = """
import importlib, inspect, json, sys
name, out = sys.argv[1], sys.argv[2]
if name != "handgrad":
    sys.modules["handgrad"] = None  # `import handgrad` now fails: the single file must not need it
hg = importlib.import_module(name)
app = importlib.import_module(name + ".app")
config = app.TrainConfig(dataset="synthetic", model="mlp", hidden=(32,), epochs=2, batch_size=64, limit=640,
                         lr=0.1, seed=3, out=out, plots=False, quiet=True)
result = app.train(config)
lines, first = inspect.getsourcelines(hg.ch06_feedforward.Linear.backward)
print(json.dumps({
    "losses": [repr(row[key]) for row in result.history for key in ("train_loss", "val_loss", "test_loss")],
    "best_val_accuracy": repr(result.best_val_accuracy),
    "file": hg.__file__,
    "linear_file": inspect.getsourcefile(hg.ch06_feedforward.Linear),
    "backward": "".join(lines),
    "handgrad_loaded": sorted(m for m, mod in sys.modules.items()
                              if mod is not None and (m == "handgrad" or m.startswith("handgrad."))),
    "outside_numpy": sorted(m for m in ("PIL", "matplotlib", "tqdm", "mpi4py") if m in sys.modules),
}))
"""


def _env(pythonpath):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _train(name, cwd, pythonpath, out):
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, name, str(out)],
        cwd=cwd,
        env=_env(pythonpath),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)],
        capture_output=True,
        text=True,
        env=_env(None),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path = folder / f"{NAME}.py"
    assert path.is_file() and f"wrote {path}" in done.stdout
    return path


def test_single_file_trains_the_same_mlp_as_the_package_bit_for_bit(built, tmp_path):
    package = _train("handgrad", tmp_path, SRC, tmp_path / "package-run")
    single = _train(NAME, built.parent, None, tmp_path / "single-run")

    assert single["losses"] == package["losses"]
    assert single["best_val_accuracy"] == package["best_val_accuracy"]
    assert float(single["losses"][-3]) < float(single["losses"][0])  # it did learn something
    # The single file's code ran, not the package's, and it needed nothing beyond NumPy.
    assert pathlib.Path(single["file"]) == built
    assert pathlib.Path(single["linear_file"]) == built
    assert single["handgrad_loaded"] == []
    assert single["outside_numpy"] == []
    assert pathlib.Path(package["file"]).parent == SRC / "handgrad"
    # Line numbers are the file's own: the source inspect finds there is the package's method, verbatim.
    assert single["backward"] == package["backward"]
    assert single["backward"].lstrip().startswith("def backward")


def test_single_file_embeds_every_module_in_reading_order(built):
    text = built.read_text(encoding="utf-8")
    banners = [line[len("# handgrad/") :] for line in text.splitlines() if line.startswith("# handgrad/")]
    package = SRC / "handgrad"
    expected = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "data" not in p.parts}
    assert set(banners) == expected - {"__main__.py", "cli.py", "app/server.py"}
    chapters = [b for b in banners if b.startswith("ch")]
    assert chapters == sorted(chapters, key=lambda b: b[:4])  # chapter 2, 3, … 10, in the book's order
    assert banners.index("ch10_sequence/__init__.py") < banners.index("datasets/__init__.py")
    assert banners.index("datasets/__init__.py") < banners.index("app/__init__.py")
    assert banners.index("ch08_optimization/sgd.py") < banners.index("ch08_optimization/adaptive.py")
    ast.parse(text)  # and it is one valid Python module
    # Every module-level import of the package was made relative, so the file never reaches an installed one.
    assert not [line for line in text.splitlines() if line.startswith(("from handgrad", "import handgrad"))]


def test_single_file_makes_the_package_imports_relative():
    spec = importlib.util.spec_from_file_location("build_single_file", SCRIPT)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.relative_imports("from handgrad import X\n", "ch04_numerical", False) == "from . import X\n"
    assert build.relative_imports("from handgrad.ch02 import f\n", "app.models.mlp", False) == (
        "from ...ch02 import f\n"
    )
    assert build.relative_imports("from handgrad._checks import c\n", "app.models", True) == (
        "from ..._checks import c\n"
    )
    # A docstring's example stays as written.
    doc = '"""Use it as\n\n    from handgrad.app import train\n"""\n'
    assert build.relative_imports(doc, "app", True) == doc
    with pytest.raises(SystemExit, match="cannot be embedded"):
        build.relative_imports("import handgrad.ch02_linear_algebra\n", "ch04_numerical", False)
