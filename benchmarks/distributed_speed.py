"""Data-parallel training speed (chapter 12, §12.1.3): one process against two ranks, and a scaling model.

    python benchmarks/distributed_speed.py [--limit-mlp 5120] [--limit-cnn 1280] [--bandwidth-gbit 10]

On this machine (2 cores) it trains one epoch of the MLP and of the CNN (default recipes, the bundled
mnist-sample) twice: 1 process with 2 BLAS threads, and ``mpiexec.gforker -n 2`` with 1 thread per rank
(shared memory, no sockets: ``MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=shm``). It prints the throughput, the
time per step spent in the gradient ``Allreduce`` (waiting for the slower rank included) and the bytes
each rank sends per step, then a model for K machines with a ring all-reduce (Patarasuk & Yuan 2009),
which sends 2(K−1)/K of the gradient bytes per rank and step in 2(K−1) messages:

    t_K = t_compute + 2(K − 1)/K · S / bandwidth + 2(K − 1) · latency,    efficiency = t_compute / t_K

for a fixed per-machine batch (the global batch grows with K, as Goyal et al. 2017 grow it), with the
measured one-process step time as t_compute and the measured gradient size S.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {"mlp": [], "cnn": ["--model", "cnn"]}


def worker(model, limit, out):
    """One epoch under mpiexec (or alone); rank 0 prints the timings as JSON."""
    from handgrad.app import TrainConfig, training

    contexts = []
    real = training._data_parallel

    def capture():
        dist = real()
        contexts.append(dist)
        return dist

    training._data_parallel = capture
    config = TrainConfig(
        dataset="mnist-sample", model=model, limit=limit, epochs=1, out=out, plots=False, quiet=True
    )
    with open(os.devnull, "w") as quiet:
        result = training.train(config, stdout=quiet)
    dist = contexts[0]
    steps = -(-limit // config.batch_size)
    info = {"train_seconds": result.history[0]["train_seconds"], "steps": steps, "images": limit}
    if dist is not None:
        info.update(allreduce_seconds=dist.allreduce_seconds, bytes=int(dist.grad_buffer.nbytes))
    if dist is None or dist.is_root:
        print(json.dumps(info), flush=True)


def run(model, limit, ranks):
    threads = "1" if ranks > 1 else "2"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "MPIR_CVAR_CH4_NETMOD": "ofi",
        "FI_PROVIDER": "shm",
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
    }
    out = tempfile.mkdtemp(prefix="hg-dist-")
    cmd = [sys.executable, __file__, "--worker", model, str(limit), out + "/run"]
    if ranks > 1:
        gforker = shutil.which("mpiexec.gforker", path=str(pathlib.Path(sys.executable).parent))
        cmd = [gforker, "-n", str(ranks), *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--limit-mlp", type=int, default=5120)
    parser.add_argument("--limit-cnn", type=int, default=1280)
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="network bandwidth assumed")
    parser.add_argument("--latency-us", type=float, default=20.0, help="per-message latency assumed")
    args = parser.parse_args()
    if args.worker:
        model, limit, out = args.worker
        return worker(model, int(limit), out)
    limits = {"mlp": args.limit_mlp, "cnn": args.limit_cnn}
    rows = []
    print("| model | setup | images/s | step time | Allreduce per step | gradient bytes S per step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model in MODELS:
        one, two = run(model, limits[model], 1), run(model, limits[model], 2)
        for name, r in (("1 process x 2 threads", one), ("2 ranks x 1 thread", two)):
            step = r["train_seconds"] / r["steps"]
            comm = (
                f"{1e3 * r['allreduce_seconds'] / r['steps']:.2f} ms "
                f"({100 * r['allreduce_seconds'] / r['train_seconds']:.0f}%)"
                if "bytes" in r
                else "-"
            )
            sent = f"{r['bytes']:,}" if "bytes" in r else "-"  # ring: 2(K-1)/K x S = S at K = 2
            rate = r["images"] / r["train_seconds"]
            print(f"| {model} | {name} | {rate:,.0f} | {1e3 * step:.1f} ms | {comm} | {sent} |")
        rows.append((model, one["train_seconds"] / one["steps"], two["bytes"]))
    bw = args.bandwidth_gbit * 1e9 / 8
    print(
        f"\nScaling model: ring all-reduce at {args.bandwidth_gbit:g} Gbit/s, {args.latency_us:g} us per "
        "message, compute per step = the measured 1-process step (per-machine batch fixed)"
    )
    print("| K | " + " | ".join(f"{m} step (ms) | {m} efficiency" for m, _, _ in rows) + " |")
    print("| --- |" + " --- | --- |" * len(rows))
    for K in (1, 2, 4, 8, 16, 32, 64):
        cells = []
        for _, t, S in rows:
            t_K = t + 2 * (K - 1) / K * S / bw + 2 * (K - 1) * args.latency_us * 1e-6
            cells.append(f"{1e3 * t_K:.1f} | {100 * t / t_K:.0f}%")
        print(f"| {K} | " + " | ".join(cells) + " |")
    print(
        "\nPublished anchors: Goyal et al. 2017, ~90% scaling efficiency from 8 to 256 GPUs (ResNet-50); "
        "Horovod (Sergeev & Del Balso 2018), 90% for Inception V3 and ResNet-101, 68% for VGG-16 "
        "on 512 GPUs."
    )


if __name__ == "__main__":
    main()
