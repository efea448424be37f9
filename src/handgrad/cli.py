"""The ``handgrad`` command: argument parsing only; every command calls one function of ``handgrad.app``.

    handgrad train [options]                    train a model (defaults: the reference MLP on MNIST)
    handgrad evaluate CHECKPOINT [options]      metrics of a checkpoint on a test set
    handgrad predict CHECKPOINT IMAGE... [--json]
    handgrad serve [CHECKPOINT]                 the draw-a-digit page

Success exits 0. A user error (a bad path, a file that is not a checkpoint, an unreadable image, a bad
option value, a diverged run) prints one line ``handgrad: error: ...`` to stderr and exits 1 — 2 for a
malformed command line — never with a traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from . import __version__

PROG = "handgrad"


class UsageError(Exception):
    """A malformed command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:  # no value, or a flag
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------------------------------
# Value types: a bad value is a usage error naming the option's expectation
# ----------------------------------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number(low, strict=False, high=None):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value) or value < low or (strict and value == low) or (high is not None and value >= high)
        if bad:
            rng = f"{'>' if strict else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"expected a number {rng}, got {text!r}")
        return value

    return parse


def _hidden(text):
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 512 or 512,256, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return tuple(sizes)


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}")
    return value


# ----------------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------------

TRAIN_OPTIONS = {}  # option string -> dest, to tell which options the user typed


def _add(parser, *flags, **kwargs):
    action = parser.add_argument(*flags, **kwargs)
    for flag in flags:
        TRAIN_OPTIONS[flag] = action.dest
    return action


def build_parser():
    from .app.config import ACTIVATIONS, MODELS, OPTIMIZERS, SCHEDULES, TrainConfig
    from .datasets import DATASET_NAMES

    d = TrainConfig()
    parser = _Parser(prog=PROG, formatter_class=_Formatter, allow_abbrev=False,
                     description="Deep learning from the Goodfellow-Bengio-Courville book in NumPy: train, "
                                 "evaluate and use classifiers of 28x28 images (MNIST, Fashion-MNIST).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    datasets = ", ".join(DATASET_NAMES)
    t = sub.add_parser("train", help="train a model and save checkpoints, metrics and plots",
                       formatter_class=_Formatter, allow_abbrev=False,
                       description="Train a classifier. The defaults are the reference configuration: an MLP "
                                   "784-512-10 with ReLU, batch 256, momentum SGD (lr 0.2, beta 0.9), weight decay "
                                   "1e-4 on the weights, 20 epochs at a constant learning rate.")
    TRAIN_OPTIONS.clear()
    _add(t, "--dataset", metavar="NAME", choices=DATASET_NAMES,
         help=f"dataset: {datasets} (default: mnist, or the bundled mnist-sample, with a notice, when MNIST is "
              "not found and cannot be downloaded)")
    _add(t, "--data-dir", metavar="DIR", help="folder holding <dataset>/ folders of IDX files (searched before "
                                              "$HANDGRAD_DATA and ~/.cache/handgrad)")
    _add(t, "--out", metavar="DIR", help="run folder for checkpoints, metrics and plots (default: runs/<timestamp>)")
    _add(t, "--epochs", metavar="N", type=_positive_int, default=d.epochs,
         help="epochs to train (with --resume: the total to reach; default there: the run's own)")
    _add(t, "--batch-size", metavar="N", type=_positive_int, default=d.batch_size, help="mini-batch size")
    _add(t, "--model", choices=MODELS, default=d.model, help="model type")
    _add(t, "--hidden", metavar="512[,256...]", type=_hidden, default=",".join(map(str, d.hidden)),
         help="hidden layer sizes, comma-separated")
    _add(t, "--activation", choices=ACTIVATIONS, default=d.activation, help="hidden-unit activation")
    _add(t, "--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="optimiser")
    _add(t, "--lr", metavar="LR", type=_number(0, strict=True), default=d.lr, help="learning rate")
    _add(t, "--momentum", metavar="BETA", type=_number(0, high=1), default=d.momentum,
         help="momentum coefficient beta (with --optimizer momentum)")
    _add(t, "--nesterov", action="store_true", help="Nesterov momentum")
    _add(t, "--weight-decay", metavar="LAMBDA", type=_number(0), default=d.weight_decay,
         help="L2 penalty lambda on the weights (not the biases)")
    _add(t, "--schedule", choices=SCHEDULES, default=d.schedule, help="learning-rate schedule (per step)")
    _add(t, "--warmup-epochs", metavar="E", type=_number(0), default=d.warmup_epochs,
         help="linear learning-rate warmup, in epochs")
    _add(t, "--seed", metavar="S", type=_seed, default=d.seed, help="seed of every random number generator")
    _add(t, "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (its own settings apply; --epochs "
                                                "sets the total to reach)")
    _add(t, "--limit", metavar="N", type=_positive_int,
         help="use only the first N training images (validation and test sets stay whole)")
    _add(t, "--no-plots", dest="plots", action="store_false", help="do not draw the PNG plots")
    _add(t, "--quiet", "-q", action="store_true", help="no progress bar or per-epoch lines, only the summary")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="loss, accuracy, macro-F1, per-class metrics and confusion matrix",
                       formatter_class=_Formatter, allow_abbrev=False,
                       description="Evaluate a checkpoint on a test set: loss, accuracy, macro-F1, per-class "
                                   "precision and recall, and the confusion matrix.")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (best.npz) or a run folder")
    e.add_argument("--dataset", metavar="NAME", choices=DATASET_NAMES,
                   help=f"dataset to evaluate on: {datasets} (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir", metavar="DIR", help="folder holding <dataset>/ folders of IDX files")
    e.add_argument("--plots", metavar="DIR", help="also write confusion.png and misclassified.png into DIR")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files", formatter_class=_Formatter, allow_abbrev=False,
                       description="Classify images (PNG, JPEG, ...) after MNIST-style preprocessing: print the "
                                   "predicted class, its confidence and the probability of every class.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (best.npz) or a run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list, one object per image: path, prediction, label, confidence, probabilities")
    p.set_defaults(func=cmd_predict)

    s = sub.add_parser("serve", help="the draw-a-digit web page", formatter_class=_Formatter, allow_abbrev=False,
                       description="Serve a local page where you draw a digit and see the model's prediction.")
    s.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", help="a checkpoint file (best.npz) or a run folder")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=lambda v: _port(v), default=8000, help="port to listen on (0: any free port)")
    s.set_defaults(func=cmd_serve)
    return parser


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}")
    return value


# ----------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------


def _typed(argv):
    """The dests of the train options the user typed."""
    out = set()
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in TRAIN_OPTIONS:
            out.add(TRAIN_OPTIONS[flag])
    return out


def cmd_train(args, argv):
    from .app import TrainConfig, train

    typed = _typed(argv)
    fields = {k: getattr(args, k) for k in ("dataset", "data_dir", "out", "epochs", "batch_size", "model", "hidden",
                                            "activation", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                                            "schedule", "warmup_epochs", "seed", "resume", "limit", "plots", "quiet")}
    if args.resume is not None:
        ignored = sorted(typed - {"epochs", "data_dir", "plots", "quiet", "resume"})
        if ignored:
            names = ", ".join("--" + k.replace("_", "-") for k in ignored)
            print(f"note: {names} ignored with --resume: the run's config.json applies", file=sys.stderr)
        if "epochs" not in typed:
            fields["epochs"] = None
    result = train(TrainConfig(**fields))
    return 0 if result is not None else 1


def cmd_evaluate(args, argv):
    from .app.evaluation import evaluate, format_report

    result = evaluate(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, plots_dir=args.plots)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_report(result))
    return 0


def cmd_predict(args, argv):
    from .app.predict import predict

    results = predict(args.checkpoint, args.images)
    if args.json:
        keys = ("path", "prediction", "label", "confidence", "probabilities")
        print(json.dumps([{k: r[k] for k in keys} for r in results], indent=2))
        return 0
    for r in results:
        probs = "  ".join(f"{c}: {p:.3f}" for c, p in zip(r["classes"], r["probabilities"]))
        print(f"{r['path']}: {r['label']} (class {r['prediction']}, confidence {100 * r['confidence']:.1f}%)")
        print(f"    {probs}")
    return 0


def cmd_serve(args, argv):
    from .app.server import serve

    serve(args.checkpoint, host=args.host, port=args.port)
    return 0


# ----------------------------------------------------------------------------------------------------


def _one_line(message):
    return " ".join(str(message).split())


def _error(message, status):
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return status


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from .app.checkpoint import CheckpointError
    from .app.config import ConfigError
    from .app.model import ArchitectureError
    from .app.training import TrainingDiverged
    from .datasets import DatasetError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except UsageError as err:
        return _error(err, 2)
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    try:
        return args.func(args, argv)
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            hint = " (a run continues from its last finished epoch with: handgrad train --resume RUN_DIR)"
        print(f"\n{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        return _error(err, 1)
    except (CheckpointError, ConfigError, DatasetError, ArchitectureError) as err:
        return _error(err, 1)
    except OSError as err:
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        return _error(f"{err.strerror or err}:{where}" if err.strerror else str(err), 1)


if __name__ == "__main__":
    sys.exit(main())
