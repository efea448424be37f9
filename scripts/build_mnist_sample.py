"""Build the bundled ``mnist-sample``: a stratified, seeded subset of the real MNIST.

    python scripts/build_mnist_sample.py --data-dir ../shared/data

reads ``<DIR>/mnist/`` (verified against the published checksums) and writes gzipped IDX files into
``src/handgrad/datasets/data/mnist-sample/``:

* ``train-images-idx3-ubyte.gz`` / ``train-labels-idx1-ubyte.gz``: 600 images per digit from the MNIST
  training set, ordered so that the first 5,000 hold 500 per digit and the last 1,000 (the validation
  part used by ``load_splits``) exactly 100 per digit, each part in the original file order;
* ``t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz``: 100 per digit from the MNIST test set;
* ``train-indices-idx1-int.gz`` / ``t10k-indices-idx1-int.gz``: the source index of each image;
* ``manifest.json``: the decompressed SHA-256 of every file, the counts and the seed.

The output is deterministic for a seed (gzip without timestamps), so rebuilding changes nothing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from handgrad.datasets import load_dataset, payload_sha256, write_idx  # noqa: E402
from handgrad.datasets.registry import SAMPLE_DIR, STEMS  # noqa: E402

MAX_TOTAL_BYTES = 3 * 1024**2


def stratified(y, per_class, val_per_class, rng):
    """Indices: ``per_class`` per label, the last ``val_per_class`` of each class moved to the end."""
    first, last = [], []
    for c in range(10):
        chosen = rng.choice(np.flatnonzero(y == c), size=per_class, replace=False)
        first.append(chosen[: per_class - val_per_class])
        last.append(chosen[per_class - val_per_class :])
    return np.concatenate([np.sort(np.concatenate(first)), np.sort(np.concatenate(last))]).astype(np.int32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding mnist/ with the full MNIST files")
    parser.add_argument("--out", default=str(SAMPLE_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    manifest = {
        "source": "MNIST (LeCun, Cortes & Burges; CC BY-SA 3.0), a stratified subset",
        "seed": args.seed,
        "checksum": "sha256 of the decompressed file",
        "files": {},
        "counts": {},
    }
    plan = {
        "train": (args.train_per_class, args.val_per_class),
        "test": (args.test_per_class, 0),
    }
    for split, (per_class, val_per_class) in plan.items():
        X, y = load_dataset("mnist", args.data_dir, split, download=False)
        index = stratified(y, per_class, val_per_class, rng)
        prefix = "train" if split == "train" else "t10k"
        arrays = {
            STEMS[split][0]: X[index],
            STEMS[split][1]: y[index].astype(np.uint8),
            f"{prefix}-indices-idx1-int": index,
        }
        for stem, array in arrays.items():
            path = out / f"{stem}.gz"
            write_idx(path, array)
            manifest["files"][stem] = {"file": path.name, "sha256": payload_sha256(path)}
        manifest["counts"][split] = {
            "per_class": per_class,
            "last_per_class": val_per_class,
            "total": len(index),
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out}: {total / 1024**2:.2f} MiB")
    if total > MAX_TOTAL_BYTES:
        print(f"error: the sample exceeds {MAX_TOTAL_BYTES / 1024**2:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
