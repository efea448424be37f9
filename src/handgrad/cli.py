"""The ``handgrad`` command: argument parsing only; every command calls one function of ``handgrad.app``.

    handgrad train [options]                    train a model (defaults: the reference MLP on MNIST)
    handgrad train --model cnn [options]        train the convolutional network with its own recipe
    handgrad evaluate CHECKPOINT [options]      metrics of a checkpoint on a test set
    handgrad predict CHECKPOINT IMAGE... [--json]
    handgrad serve [CHECKPOINT]                 the draw-a-digit page
    handgrad train --model lstm --text FILE     a character language model (also rnn, gru)
    handgrad sample CHECKPOINT [--length N] [--temperature T] [--prime TEXT] [--seed S]
    handgrad gradcheck [model options]          back-propagation against finite differences (§11.5)

Success exits 0. A user error (a bad path, a file that is not a checkpoint, an unreadable image, a bad
option value, a diverged run) prints one line ``handgrad: error: ...`` to stderr and exits 1 — 2 for a
malformed command line — never with a traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
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
# Types: argparse parses the text; TrainConfig.validate checks the value (one home for the checks)
# ----------------------------------------------------------------------------------------------------


def _size_list(example):
    """An argparse type for comma-separated sizes (layer widths, channel counts); 'none' for none."""

    def parse(text):
        if text.strip().lower() in ("", "none"):  # a CNN may have no dense layer before its output
            return ()
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated sizes such as {example}, got {text!r}"
            ) from None

    return parse


# ----------------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------------

TRAIN_OPTIONS = {}  # option string -> dest, to tell which options the user typed


def _add(parser, *flags, **kwargs):
    action = parser.add_argument(*flags, **kwargs)
    for flag in flags:
        TRAIN_OPTIONS[flag] = action.dest
    return action


def _per_model(name, show=str):
    """'512 for mlp, 128 for cnn, 128 for rnn, lstm, gru, 256 for --text': a model-dependent default as the
    help text shows it. The reference models come first, each on its own; the later ones that share a
    value are named together, and the language models, which share one recipe, as '--text'."""
    from .app.config import MODEL_DEFAULTS

    groups = {}
    for model, d in MODEL_DEFAULTS.items():
        label = "--text" if model.startswith("char-") else model
        key = (model,) if model in ("mlp", "cnn") else ("later", show(d.get(name)))
        entry = groups.setdefault(key, (show(d.get(name)), []))
        if label not in entry[1]:
            entry[1].append(label)
    return ", ".join(f"{value} for {', '.join(models)}" for value, models in groups.values())


def _sizes(value):
    return ",".join(map(str, value)) or "none"


def _train_help(datasets):
    """The help text of each train option, keyed by TrainConfig field (its order is --help's)."""
    from .app.config import MODEL_DEFAULTS

    on_off = lambda v: "on" if v else "off"  # noqa: E731
    number = lambda v: f"{v:g}"  # noqa: E731
    return {
        "dataset": f"dataset: {datasets} (default: mnist, or the bundled mnist-sample, with a notice, when "
        "MNIST is not found and cannot be downloaded)",
        "data_dir": "folder holding <dataset>/ folders of IDX files (searched before $HANDGRAD_DATA and "
        "~/.cache/handgrad)",
        "out": "run folder for checkpoints, metrics and plots (default: runs/<timestamp>)",
        "model": "model type: a multilayer perceptron, the convolutional network, or a recurrent network "
        "(tanh RNN, LSTM, GRU) reading each image as a sequence of rows, or with --text a character "
        "language model; picks the defaults of the options marked 'for mlp ..., for cnn ...'",
        "epochs": f"epochs to train (default: {_per_model('epochs')}; with --resume: the total to reach, by "
        "default the run's own)",
        "batch_size": f"mini-batch size (default: {_per_model('batch_size')})",
        "hidden": "hidden dense layer sizes, comma-separated; for the CNN the dense layers after the "
        f"convolutions ('none' for none) (default: {_per_model('hidden', _sizes)})",
        "channels": "CNN only: output channels of each convolution block (3x3 conv, [batch norm], "
        "activation, 2x2 max-pool), comma-separated, at most 4 for 28x28 images (default: "
        f"{_sizes(MODEL_DEFAULTS['cnn']['channels'])})",
        "activation": "hidden-unit activation",
        "dropout": "dropout: probability of dropping a unit after each hidden dense layer (CNN: also after "
        f"the convolutions); 0 for none (default: {_per_model('dropout')})",
        "batch_norm": f"batch normalisation before each hidden activation (default: "
        f"{_per_model('batch_norm', on_off)})",
        "augment": "augment each training batch with random shifts and rotations (default: "
        f"{_per_model('augment', on_off)})",
        "augment_shift": "with --augment: largest shift, in pixels, in each direction",
        "augment_degrees": "with --augment: largest rotation, in degrees, either way",
        "augment_elastic": "with --augment: strength alpha, in pixels, of an elastic distortion (Simard et "
        "al. 2003; smoothing sigma 4 px), 0 for none (default: 0)",
        "optimizer": "optimiser (adamw: Adam with decoupled weight decay) (default: "
        f"{_per_model('optimizer')})",
        "lr": f"learning rate (peak rate with a schedule) (default: {_per_model('lr', number)})",
        "momentum": "momentum coefficient beta (with --optimizer momentum)",
        "nesterov": "Nesterov momentum",
        "weight_decay": "L2 penalty lambda on the weights (not biases or batch-norm parameters); with "
        f"adamw the decoupled decay rate (default: {_per_model('weight_decay', number)})",
        "schedule": f"learning-rate schedule, per step (default: {_per_model('schedule')})",
        "warmup_epochs": "linear learning-rate warmup, in epochs (default: "
        f"{_per_model('warmup_epochs', number)})",
        "lr_step_epochs": "step schedule: multiply the rate by --lr-gamma every E epochs (default: a third "
        "of the epochs)",
        "lr_batch": "linear scaling rule (Goyal et al. 2017): --lr is the rate for batches of N, and a "
        "--batch-size of B trains at lr x B/N, warming up from lr over --warmup-epochs; for a "
        "global batch grown with the ranks of mpiexec (default: off)",
        "lr_gamma": "decay factor in (0, 1]: per step of the step schedule (default 0.1), per epoch for the "
        "exponential one (default 0.9)",
        "patience": "early stopping: stop after N epochs without a better validation accuracy (default: off)",
        "seed": "seed of every random number generator",
        "resume": "continue the run in RUN_DIR (its own settings apply; --epochs sets the total to reach)",
        "limit": "use only the first N training images, or characters of a text (validation and test sets "
        "stay whole)",
        "clip_grad_norm": "clip the gradient's global L2 norm to this value before each step (book "
        "§10.11.1); 0 for off (default: "
        f"{_per_model('clip_grad_norm', lambda v: f'{v:g}' if v else 'off')})",
        "text": "train a character language model (--model rnn, lstm or gru) on this UTF-8 text file: the "
        "first 90%% for training, the next 5%% for validation, the last 5%% for testing, losses in "
        "bits per character (a text corpus of --dataset, such as fortunes-min, works too)",
        "seq_len": "language models: characters per sequence, the truncation length of back-propagation "
        f"through time (default: {MODEL_DEFAULTS['char-lstm']['seq_len']})",
        "embedding_dim": "language models: the size of each character's embedding (default: "
        f"{MODEL_DEFAULTS['char-lstm']['embedding_dim']})",
        "overfit": "debugging check (book 11.5): train on the first N training images (or characters of a "
        "text) only, without augmentation or dropout unless given, and report whether 100%% training "
        "accuracy is reached (a language model: 100%% next-character accuracy or under 0.1 bits per "
        "character) (exit 1 if not)",
        "monitor": "log per layer and epoch the activation mean/std (on 256 validation images, or a "
        "language model's first validation window), dead ReLU units, gradient norm and update ratio "
        "|dtheta|/|theta| into monitor.csv (and monitor.png), with warnings",
        "plots": "do not draw the PNG plots",
        "quiet": "no progress bar or per-epoch lines, only the summary",
    }


# TrainConfig fields that are not train options; every other field is one, named after it.
NOT_TRAIN_OPTIONS = ("eval_batch_size",)
_METAVARS = {
    "dataset": "NAME",
    "data_dir": "DIR",
    "out": "DIR",
    "epochs": "N",
    "batch_size": "N",
    "hidden": "512[,256...]",
    "channels": "16,32,64",
    "dropout": "P",
    "augment_shift": "PX",
    "augment_degrees": "DEG",
    "augment_elastic": "ALPHA",
    "lr": "LR",
    "momentum": "BETA",
    "weight_decay": "LAMBDA",
    "warmup_epochs": "E",
    "lr_step_epochs": "E",
    "lr_batch": "N",
    "lr_gamma": "G",
    "patience": "N",
    "seed": "S",
    "resume": "RUN_DIR",
    "limit": "N",
    "overfit": "N",
    "clip_grad_norm": "NORM",
    "text": "FILE",
    "seq_len": "T",
    "embedding_dim": "E",
}
_SHORT_FLAGS = {"quiet": ("-q",)}


def _kind(annotation):
    """'int' for ``int | None``, also as the string "int | None" (postponed evaluation of annotations)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.replace(" ", "").split("|")[0]


def _add_train_options(parser, skip=()):
    """One option per TrainConfig field: its type from the annotation, its default from the dataclass
    (the fields named in ``skip`` left out: the tools that take train's options but not all of them).

    argparse only parses (int, float, comma-separated sizes); ``TrainConfig.validate`` checks the values,
    so a bad one is a one-line ConfigError. A bool field is a flag: ``--x`` (default False), ``--no-x``
    (default True) or ``--x/--no-x`` (default None: the model's). Choices show as ``{a,b}``.
    """
    import dataclasses

    from .app.config import ACTIVATIONS, MODELS, OPTIMIZERS, SCHEDULES, TrainConfig
    from .datasets import DATASET_NAMES

    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_TRAIN_OPTIONS}
    helps = _train_help(", ".join(DATASET_NAMES))
    if set(helps) != set(fields):
        raise RuntimeError(f"train options and TrainConfig fields differ: {sorted(set(helps) ^ set(fields))}")
    choices = {"model": MODELS, "activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    parse = {"int": int, "float": float, "str": str}
    for name, help_text in helps.items():
        if name in skip:
            continue
        field, flag = fields[name], "--" + name.replace("_", "-")
        kind = _kind(field.type)
        kwargs = {"help": help_text, "default": field.default}
        if kind == "bool":
            if field.default is True:
                flag = "--no-" + name.replace("_", "-")
                kwargs.update(dest=name, action="store_false")
            else:
                kwargs["action"] = "store_true" if field.default is False else argparse.BooleanOptionalAction
        elif kind == "tuple":
            kwargs.update(type=_size_list(_METAVARS[name]), metavar=_METAVARS[name])
        else:
            kwargs.update(type=parse[kind], metavar=_METAVARS.get(name))
            if name in choices:
                kwargs["metavar"] = "{" + ",".join(choices[name]) + "}"
        _add(parser, flag, *_SHORT_FLAGS.get(name, ()), **kwargs)


def build_parser():
    from .datasets import DATASET_NAMES

    TRAIN_OPTIONS.clear()
    parser = _Parser(
        prog=PROG,
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Deep learning from the Goodfellow-Bengio-Courville book in NumPy: train, "
        "evaluate and use image classifiers (MNIST, Fashion-MNIST, and any registered dataset).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    datasets = ", ".join(DATASET_NAMES)
    t = sub.add_parser(
        "train",
        help="train a model and save checkpoints, metrics and plots",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Train a classifier. The defaults depend on --model. For the MLP they are the "
        "reference configuration: 784-512-10 with ReLU, batch 256, momentum SGD (lr 0.2, "
        "beta 0.9), weight decay 1e-4 on the weights, 20 epochs at a constant learning "
        "rate. For the CNN they are its recipe: conv blocks 16-32-64 (3x3 conv, batch "
        "norm, ReLU, 2x2 max-pool), dense 128, dropout 0.25, Adam lr 3e-3, batch 128, "
        "cosine schedule with 1 warmup epoch, shift/rotation augmentation, 12 epochs. "
        "The recurrent models (rnn, lstm, gru) read each image "
        "as 28 rows of 28 pixels; with --text FILE they train a character "
        "language model. "
        "Options given explicitly override the chosen model's defaults; options marked "
        "'for mlp ..., for cnn ...' below take the chosen model's value when not given.",
    )
    _add_train_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="loss, accuracy, macro-F1, per-class metrics and confusion matrix",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Evaluate a checkpoint on a test set: loss, accuracy, macro-F1, per-class "
        "precision and recall, and the confusion matrix.",
    )
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (best.npz) or a run folder")
    e.add_argument(
        "--dataset",
        metavar="NAME",
        choices=DATASET_NAMES,
        help=f"dataset to evaluate on: {datasets} (default: the one the checkpoint was trained on)",
    )
    e.add_argument("--data-dir", metavar="DIR", help="folder holding <dataset>/ folders of IDX files")
    e.add_argument(
        "--text",
        metavar="FILE",
        help="language models: evaluate on this text file, split as in training (default: the "
        "corpus the checkpoint was trained on)",
    )
    e.add_argument("--plots", metavar="DIR", help="also write confusion.png and misclassified.png into DIR")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument(
        "--worst",
        type=int,
        default=0,
        metavar="K",
        help="also list the K test examples the model got wrong with the highest confidence "
        "(with --plots: worst.png)",
    )
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="classify image files",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Classify images (PNG, JPEG, ...) after MNIST-style preprocessing: print the "
        "predicted class, its confidence and the probability of every class.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (best.npz) or a run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list, one object per image: path, prediction, label, confidence, probabilities",
    )
    p.set_defaults(func=cmd_predict)

    g = sub.add_parser(
        "sample",
        help="generate text with a character language model",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Generate text with a language model trained by 'handgrad train --model "
        "lstm --text FILE': each character drawn from the model's softmax at the "
        "given temperature by the Gumbel-max trick (temperature 0: the likeliest "
        "one).",
    )
    g.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (best.npz) or a run folder")
    g.add_argument("--length", type=int, default=500, metavar="N", help="characters to generate")
    g.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="T",
        help="softmax temperature: below 1 more likely text, above 1 more varied; 0: argmax",
    )
    g.add_argument(
        "--prime",
        metavar="TEXT",
        help="text the model reads first; the sample continues it (default: a newline)",
    )
    g.add_argument("--seed", type=int, metavar="S", help="seed of the sampler (default: a fresh one)")
    g.set_defaults(func=cmd_sample)

    s = sub.add_parser(
        "serve",
        help="the draw-a-digit web page",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Serve a local page where you draw a digit and see the model's prediction.",
    )
    s.add_argument(
        "checkpoint", metavar="CHECKPOINT", nargs="?", help="a checkpoint file (best.npz) or a run folder"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument(
        "--port", type=lambda v: _port(v), default=8000, help="port to listen on (0: any free port)"
    )
    s.set_defaults(func=cmd_serve)
    _add_tool_parsers(sub)
    _add_gradcheck_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------------------
# Chapter 11's tools (handgrad.app.tools): train's model, data and optimiser options, and their own
# ----------------------------------------------------------------------------------------------------

# Train options a tool does not take: where and how verbosely a run goes (each tool has its own --out),
# and for lr-find everything the ramp replaces (the rate, its schedule, the epochs).
_TOOL_SKIP = ("out", "resume", "quiet")
_LR_FIND_SKIP = (
    *_TOOL_SKIP,
    "plots",
    "lr",
    "epochs",
    "schedule",
    "warmup_epochs",
    "lr_step_epochs",
    "lr_gamma",
    "patience",
)


def _tool_parser(sub, name, help_text, description, skip):
    parser = sub.add_parser(
        name, help=help_text, description=description, formatter_class=_Formatter, allow_abbrev=False
    )
    _add_train_options(
        parser.add_argument_group(f"model, data and optimiser (as for '{PROG} train')"), skip=skip
    )
    return parser


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _add_tool_parsers(sub):
    from .app.tools.search import SPACE_HELP

    f = _tool_parser(
        sub,
        "lr-find",
        "the learning-rate range test: loss against an exponential ramp of lr",
        "The learning-rate range test (book §11.4.1): from the initialisation train would use, "
        "one mini-batch step per learning rate, growing exponentially from --min-lr to --max-lr "
        "over --steps; the loss smoothed by a debiased moving average (beta 0.98); stopped when "
        "it passes 4x its minimum. Prints two suggestions: the steepest descent of the "
        "smoothed loss (central differences on log10 lr, before its minimum) and the learning "
        "rate at the minimum / 10. Writes OUT/lr_find.csv and OUT/lr_find.png; keeps no model. "
        "A language model (--text FILE or a text --dataset) steps through the windows of its training "
        "text in order, the state carried as in training; its losses are nats per character.",
        _LR_FIND_SKIP,
    )
    f.add_argument("--min-lr", type=float, default=1e-6, metavar="LR", help="first learning rate")
    f.add_argument("--max-lr", type=float, default=10.0, metavar="LR", help="last learning rate")
    f.add_argument("--steps", type=_integer, default=100, metavar="N", help="mini-batch steps")
    f.add_argument("--out", default="lr-find", metavar="DIR", help="folder for lr_find.csv and lr_find.png")
    f.add_argument(
        "--json",
        action="store_true",
        help='print {"suggestion", "min_loss_lr", "steps", "diverged"} as JSON: the '
        "steepest-descent suggestion, the learning rate at the smoothed minimum (the other "
        "suggestion is a tenth of it), the steps taken, whether it stopped on divergence",
    )
    f.set_defaults(func=cmd_lr_find)

    s = _tool_parser(
        sub,
        "search",
        "random or grid search over train's options, one run per trial",
        "Random search (book §11.4.4) or grid search (§11.4.3) over train's options. Each trial "
        "is a train run in its own folder under --out; the same command again continues the "
        "search (finished trials are read back, an interrupted one resumed). Trials are ranked "
        "by validation accuracy (test accuracy only shown, as a monitor) in OUT/results.csv and "
        "the printed table; OUT/search.png plots validation accuracy against each "
        "hyperparameter; the best trial's train command is printed. Language models (--text "
        "FILE or a text --dataset) are ranked by validation bits per character, lowest first. "
        "SPACE: " + SPACE_HELP,
        _TOOL_SKIP,
    )
    s.add_argument("space", metavar="SPACE", nargs="*", help="the search space: NAME=KIND(ARGS) ... (quoted)")
    s.add_argument("--method", choices=("random", "grid"), default="random", help="how trials are chosen")
    s.add_argument(
        "--trials",
        type=_integer,
        metavar="N",
        help="trials to run (default: 10 for random, every point of a grid)",
    )
    s.add_argument(
        "--grid-points",
        type=_integer,
        default=3,
        metavar="K",
        help="grid: values taken of each log/uniform/int range",
    )
    s.add_argument(
        "--search-seed",
        type=_integer,
        default=0,
        metavar="S",
        help="random: seed of the draws (--seed is each trial's training seed)",
    )
    s.add_argument(
        "--jobs",
        type=_integer,
        default=1,
        metavar="N",
        help="trials run at once, in processes with one BLAS thread each",
    )
    s.add_argument(
        "--out", metavar="DIR", help="the search folder (default: runs/search-<hash of the search>)"
    )
    s.set_defaults(func=cmd_search)

    c = _tool_parser(
        sub,
        "learning-curve",
        "training and validation error against training-set size",
        "Learning curve (book §11.3, whether to gather more data): trains on log-spaced "
        "fractions of the training set (the first N images; the same validation set) and "
        "measures each best model's error on its training images and on the validation set. "
        "A language model trains on prefixes of its training text and is measured in bits per "
        "character against the characters. "
        "Writes OUT/learning_curve.csv and OUT/learning_curve.png; re-running continues.",
        _TOOL_SKIP,
    )
    c.add_argument("--points", type=_integer, default=5, metavar="K", help="training-set sizes")
    c.add_argument(
        "--min-fraction",
        type=float,
        default=0.01,
        metavar="F",
        help="smallest fraction of the training set (the largest is all of it, or --limit)",
    )
    c.add_argument(
        "--jobs",
        type=_integer,
        default=1,
        metavar="N",
        help="sizes trained at once, in processes with one BLAS thread each",
    )
    c.add_argument("--out", default="learning-curve", metavar="DIR", help="folder for the runs, CSV and plot")
    c.set_defaults(func=cmd_learning_curve)


GRADCHECK_MODEL_OPTIONS = (
    "dataset",
    "data_dir",
    "model",
    "hidden",
    "channels",
    "activation",
    "batch_norm",
    "seed",
    "text",
    "embedding_dim",
)


def _add_gradcheck_parser(sub):
    """``handgrad gradcheck``: the model options of ``train`` (same help), and the check's own."""
    from .app.config import ACTIVATIONS, MODELS
    from .app.tools.gradcheck import TOLERANCE
    from .datasets import DATASET_NAMES

    g = sub.add_parser(
        "gradcheck",
        help="check back-propagation against finite differences (book 11.5)",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Build the model the same options give 'handgrad train' in float64 "
        "(dropout off), and compare its back-propagated gradients with central "
        "differences on a few training images: the largest relative error of each "
        "parameter array; exit status 1 above the tolerance "
        f"(default {TOLERANCE:g}).",
    )
    helps = _train_help(", ".join(DATASET_NAMES))
    kinds = {
        "dataset": dict(metavar="NAME"),
        "data_dir": dict(metavar="DIR"),
        "model": dict(choices=MODELS, default="mlp"),
        "hidden": dict(type=_size_list("512[,256...]"), metavar="512[,256...]"),
        "channels": dict(type=_size_list("16,32,64"), metavar="16,32,64"),
        "activation": dict(choices=ACTIVATIONS, default="relu"),
        "batch_norm": dict(action=argparse.BooleanOptionalAction),
        "seed": dict(type=int, default=0),
        "text": dict(metavar="FILE"),
        "embedding_dim": dict(type=int, metavar="E"),
    }
    for name in GRADCHECK_MODEL_OPTIONS:
        g.add_argument("--" + name.replace("_", "-"), dest=name, help=helps[name], **kinds[name])
    g.add_argument("--examples", type=int, default=4, metavar="N", help="training images in the batch")
    g.add_argument(
        "--entries",
        type=int,
        default=12,
        metavar="K",
        help="entries checked per parameter array at most (a random subset of larger ones)",
    )
    g.add_argument(
        "--tolerance", type=float, default=TOLERANCE, metavar="TOL", help="largest relative error that passes"
    )
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=cmd_gradcheck)


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
    # Options not given are None and take the chosen model's default (TrainConfig.__post_init__).
    fields = {dest: getattr(args, dest) for dest in set(TRAIN_OPTIONS.values())}
    if args.resume is not None:
        ignored = sorted(typed - {"epochs", "data_dir", "plots", "quiet", "resume", "monitor"})
        if ignored:
            names = ", ".join("--" + k.replace("_", "-") for k in ignored)
            print(f"note: {names} ignored with --resume: the run's config.json applies", file=sys.stderr)
        if "epochs" not in typed:
            fields["epochs"] = None
    elif "text" in typed and "model" not in typed:
        fields["model"] = "lstm"  # --text alone: the LSTM language model
    result = train(TrainConfig(**fields))
    if result is not None and result.overfit_reached is False:
        return 1  # --overfit N: the check failed (its line is printed)
    return 0 if result is not None else 1


def _train_fields(args, argv):
    """The TrainConfig fields a tool's command line gives (None: the model's default); ``--text`` without
    ``--model`` is the LSTM language model, as for train."""
    fields = {dest: getattr(args, dest) for dest in set(TRAIN_OPTIONS.values()) if hasattr(args, dest)}
    typed = _typed(argv)
    if "text" in typed and "model" not in typed:
        fields["model"] = "lstm"
    return fields


def cmd_lr_find(args, argv):
    from .app import TrainConfig
    from .app.tools.lr_find import format_report, lr_find

    result = lr_find(
        TrainConfig(**_train_fields(args, argv)),
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        steps=args.steps,
        out=args.out,
        log=lambda msg="": print(msg, file=sys.stderr),
    )
    print(json.dumps(result.to_json()) if args.json else format_report(result, args.min_lr, args.max_lr))
    return 0


def cmd_search(args, argv):
    from .app.tools.search import format_table, search

    result = search(
        args.space,
        _train_fields(args, argv),
        method=args.method,
        trials=args.trials,
        grid_points=args.grid_points,
        seed=args.search_seed,
        out=args.out,
        jobs=args.jobs,
        plot=args.plots,
    )
    print(format_table(result))
    return 0


def cmd_learning_curve(args, argv):
    from .app.tools.learning_curve import format_table, learning_curve

    result = learning_curve(
        _train_fields(args, argv),
        points=args.points,
        min_fraction=args.min_fraction,
        out=args.out,
        jobs=args.jobs,
        plot=args.plots,
    )
    print(format_table(result))
    return 0


def cmd_evaluate(args, argv):
    from .app.evaluation import evaluate, format_report

    result = evaluate(
        args.checkpoint,
        dataset=args.dataset,
        data_dir=args.data_dir,
        plots_dir=args.plots,
        worst=args.worst,
        text=args.text,
    )
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


def cmd_sample(args, argv):
    from .app.language_model import sample

    print(
        sample(
            args.checkpoint,
            length=args.length,
            temperature=args.temperature,
            prime=args.prime,
            seed=args.seed,
        )
    )
    return 0


def cmd_gradcheck(args, argv):
    from .app import TrainConfig
    from .app.tools.gradcheck import format_gradcheck, gradcheck

    config = TrainConfig(**{name: getattr(args, name) for name in GRADCHECK_MODEL_OPTIONS})
    result = gradcheck(config, examples=args.examples, entries=args.entries, tolerance=args.tolerance)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_gradcheck(result))
    if not result.passed:
        worst = max(result.params, key=lambda p: p["error"])
        return _error(
            f"gradient check failed: {worst['name']} has relative error {worst['error']:.2e} > "
            f"{result.tolerance:g}; the backward pass of a layer is wrong",
            1,
        )
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
    from .app.allocator import keep_freed_memory
    from .app.checkpoint import CheckpointError
    from .app.config import ConfigError
    from .app.models import ArchitectureError
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
    keep_freed_memory()  # the training steps' temporaries are reused, not faulted in afresh
    try:
        return args.func(args, argv)
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            hint = " (a run continues from its last finished epoch with: handgrad train --resume RUN_DIR)"
        elif args.command in ("search", "learning-curve"):
            hint = " (the same command continues it: finished runs are kept, an interrupted one resumed)"
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
