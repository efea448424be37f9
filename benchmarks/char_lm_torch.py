"""The character language model in handgrad and in PyTorch, side by side: test bits per character and
samples, on the fortunes corpus.

    HANDGRAD_DATA=DIR python benchmarks/char_lm_torch.py                 # 1 epoch, LSTM 128
    HANDGRAD_DATA=DIR python benchmarks/char_lm_torch.py --epochs 3 --hidden 256 --batch 64

handgrad trains with ``handgrad train --model lstm --dataset fortunes`` (the options printed); PyTorch then
trains the same network — ``nn.Embedding``, ``nn.LSTM`` (batch-first), ``nn.Linear`` — from the same initial
weights (handgrad's, converted: ``weight_ih = Uᵀ``, ``weight_hh = Wᵀ``, ``bias_ih = b``, ``bias_hh = 0``) on
the same split (90 / 5 / 5%, the vocabulary of the training part), the same stream layout of ``--batch``
streams read in windows of ``--seq-len`` characters with the state carried between windows (detached:
truncated BPTT) and reset each epoch, the same loss (the mean cross-entropy per character), the same Adam
(lr ``--lr``, constant) and the same clipping of the gradient's global norm (``clip_grad_norm_``). Both are
evaluated on the test part in the same way (``--batch`` streams, the state carried) and each prints a
sample of ``--sample-length`` characters at temperature ``--temperature``, primed with a newline.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import detach_state, machine_header, peak_rss_mb, pin_threads, print_table, torch_char_lm


def train_handgrad(args, out):
    from handgrad.app import TrainConfig, train

    config = TrainConfig(
        model="lstm",
        dataset="fortunes",
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch,
        seq_len=args.seq_len,
        hidden=(args.hidden,),
        embedding_dim=args.embedding,
        lr=args.lr,
        schedule="constant",
        warmup_epochs=0,
        clip_grad_norm=args.clip,
        eval_batch_size=args.batch,
        seed=args.seed,
        out=out,
        plots=False,
    )
    t0 = time.perf_counter()
    result = train(config)
    return result, time.perf_counter() - t0


def torch_bpc(model, ids, streams, seq_len):
    import torch

    from handgrad.app.language_model import stream_layout

    X, Y = stream_layout(ids, max(1, min(streams, len(ids) - 1)))
    X, Y = torch.from_numpy(X.astype(np.int64)), torch.from_numpy(Y.astype(np.int64))
    total, state = 0.0, None
    model.eval()
    with torch.no_grad():
        for s in range(0, X.shape[1], seq_len):
            logits, state = model(X[:, s : s + seq_len], state)
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), Y[:, s : s + seq_len].reshape(-1), reduction="sum"
                )
            )
    model.train()
    return total / Y.numel() / math.log(2)


def train_torch(args, arch, splits):
    import torch

    from handgrad.app.language_model import stream_layout

    torch.manual_seed(args.seed)
    model = torch_char_lm(arch, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    X, Y = stream_layout(splits.train, args.batch)
    X, Y = torch.from_numpy(X.astype(np.int64)), torch.from_numpy(Y.astype(np.int64))
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        state, loss_sum, seen = None, 0.0, 0
        for s in range(0, X.shape[1], args.seq_len):
            xb, yb = X[:, s : s + args.seq_len], Y[:, s : s + args.seq_len]
            logits, state = model(xb, state)
            state = detach_state(state)  # truncated BPTT: the state goes on, the gradient stops
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            loss_sum += loss.item() * yb.numel()
            seen += yb.numel()
        val = torch_bpc(model, splits.val, args.batch, args.seq_len)
        history.append((epoch, loss_sum / seen / math.log(2), val))
        print(f"  torch epoch {epoch}: train {history[-1][1]:.4f} bpc, val {val:.4f} bpc", flush=True)
    seconds = time.perf_counter() - t0
    return model, history, torch_bpc(model, splits.test, args.batch, args.seq_len), seconds


def torch_sample(model, vocab, length, temperature, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    model.eval()
    out, state = ["\n"], None
    x = torch.tensor([[vocab.index("\n")]])
    with torch.no_grad():
        for _ in range(length):
            logits, state = model(x, state)
            p = torch.softmax(logits[0, -1].double() / temperature, dim=0)
            k = int(torch.multinomial(p, 1, generator=gen))
            out.append(vocab[k])
            x = torch.tensor([[k]])
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding text/fortunes.txt.gz (default: $HANDGRAD_DATA)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embedding", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-length", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--out", help="handgrad's run folder (default: a temporary one)")
    parser.add_argument(
        "--threads", type=int, default=2, help="BLAS threads (1 is faster on a machine other jobs keep busy)"
    )
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    for line in machine_header():
        print(line)
    print(
        f"\nhandgrad train --model lstm --dataset fortunes --epochs {args.epochs} --batch-size {args.batch} "
        f"--seq-len {args.seq_len} --hidden {args.hidden} --embedding-dim {args.embedding} --lr {args.lr:g} "
        f"--schedule constant --warmup-epochs 0 --clip-grad-norm {args.clip:g} --seed {args.seed}",
        flush=True,
    )
    from handgrad.app.checkpoint import load_checkpoint
    from handgrad.app.language_model import sample
    from handgrad.datasets import load_text

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(pathlib.Path(tmp) / "run")
        result, hg_seconds = train_handgrad(args, out)
        arch = load_checkpoint(pathlib.Path(out) / "last.npz").metadata["arch"]
        hg_sample = sample(
            out + "/last.npz",
            length=args.sample_length,
            temperature=args.temperature,
            prime="\n",
            seed=args.seed,
        )
        hg_test = result.history[-1]["test_bpc"]  # the last epoch's parameters, as PyTorch's
    splits = load_text(dataset="fortunes", data_dir=args.data_dir)
    model, history, torch_test, torch_seconds = train_torch(args, arch, splits)
    th_sample = torch_sample(model, splits.vocab, args.sample_length, args.temperature, args.seed)
    print()
    rows = [
        [
            "handgrad",
            f"{result.history[-1]['train_bpc']:.4f}",
            f"{result.history[-1]['val_bpc']:.4f}",
            f"**{hg_test:.4f}**",
            f"{hg_seconds / args.epochs:.0f}",
        ],
        [
            "PyTorch",
            f"{history[-1][1]:.4f}",
            f"{history[-1][2]:.4f}",
            f"{torch_test:.4f}",
            f"{torch_seconds / args.epochs:.0f}",
        ],
    ]
    print_table(
        ["library", "train bpc (last epoch)", "val bpc", "test bpc", "s/epoch (with evaluation)"], rows
    )
    print(
        f"\ntest bpc, handgrad − PyTorch: {hg_test - torch_test:+.4f} (target: within ±0.03); "
        f"peak memory of this process {peak_rss_mb():.0f} MB"
    )
    print(f"\nhandgrad sample (temperature {args.temperature:g}):\n{hg_sample}")
    print(f"\nPyTorch sample (temperature {args.temperature:g}):\n{th_sample}")


if __name__ == "__main__":
    main()
