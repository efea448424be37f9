"""Hyperparameter search (``handgrad search``): random search (§11.4.4) and grid search (§11.4.3).

The space is a list of ``NAME=KIND(ARGS)``, NAME a ``TrainConfig`` field (so every option of ``handgrad
train`` can be searched; dashes or underscores), KIND one of

    log(a, b)       log-uniform in [a, b], 0 < a < b        lr=log(1e-3,1)  weight_decay=log(1e-6,1e-3)
    uniform(a, b)   uniform in [a, b], a < b                dropout=uniform(0,0.5)  momentum=uniform(0.8,0.99)
    int(a, b)       an integer in a … b, a < b              epochs=int(5,20)  batch_size=int(64,512)
    choice(v, …)    one of the values, in the field's kind  hidden=choice(256,512,1024-512)
                                                            optimizer=choice(momentum,adam)
                                                            batch_norm=choice(on,off)
                                                            schedule=choice(constant,cosine)

Layer sizes are written with dashes (``1024-512`` is two hidden layers, ``none`` none) since the commas
separate the values; flags take on/off (or true/false, yes/no, 1/0). A log or uniform range over an integer
field (``batch_size=log(32,512)``) is rounded. Quote the space on a shell command line (the parentheses).

**Random search** (Bergstra & Bengio, 2012) draws each trial's values independently from a generator
seeded by ``seed``: continuous values rounded to 3 significant digits, so the printed commands repeat them
exactly. Trial i's values do not depend on ``trials``, so raising ``--trials`` extends a search.
**Grid search** takes ``grid_points`` values of each range (geometrically spaced for ``log``, evenly for
``uniform`` and ``int``; every value of a ``choice``) and runs their Cartesian product in order, the last
dimension fastest; ``--trials N`` runs the first N points. With one important hyperparameter among several,
a grid of N trials tries only N^(1/d) values of it, random search N (the book's figure 11.2).

Each trial is a ``handgrad train`` run with its own folder (``trial-001/`` …) under the search folder. The
search folder keeps ``search.json`` (the space, the method and the options shared by every trial); each
trial folder keeps its values (``trial.json``) and, once finished, its result (``result.json``). Running the
same command again therefore continues an interrupted search: finished trials are read back, an
interrupted one is resumed from its last epoch, the rest are run; a different search in the same folder is
refused. Trials are ranked by validation accuracy — the test accuracy is shown as a monitor, never used to
rank — in ``results.csv`` (rank, trial, accuracies, best epoch, epochs, seconds, status, the values, the
``handgrad train`` command) and the printed table; ``search.png`` plots validation accuracy against each
hyperparameter. A search of character language models (``--text FILE`` or a text ``--dataset``; the
corpus cannot be searched) ranks by validation **bits per character** instead, lower first, each trial's
best epoch's (the one its run keeps): ``val_bpc`` and ``test_bpc_monitor`` in ``results.csv``, bpc in the
table and the plot. With ``jobs`` > 1 the trials run in that many processes, one BLAS thread each.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import pathlib
import re

import numpy as np

from ..config import ConfigError, TrainConfig
from ._trials import ACCURACY, field_kind, metric_of, run_all, train_command

__all__ = [
    "Dimension",
    "parse_space",
    "search",
    "SearchResult",
    "sample_random",
    "grid",
    "SPACE_HELP",
    "NOT_SEARCHABLE",
]

KINDS = ("log", "uniform", "int", "choice")
# Where and how verbosely runs go, not what they train.
NOT_SEARCHABLE = ("dataset", "text", "data_dir", "out", "resume", "quiet", "plots", "eval_batch_size")
SPACE_HELP = (
    "NAME=KIND(ARGS) ..., NAME a train option (lr, hidden, dropout, optimizer, ...), KIND one of "
    "log(a,b) log-uniform, uniform(a,b), int(a,b) integers a..b, choice(v1,v2,...); layer sizes "
    "with dashes (1024-512), flags on/off. Example: "
    "'lr=log(1e-3,1) hidden=choice(256,512,1024-512) dropout=uniform(0,0.5) epochs=int(5,20)'"
)
_ITEM = re.compile(r"\s*([A-Za-z_][\w-]*)\s*=\s*([A-Za-z_]+)\s*\(([^()]*)\)\s*")
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One hyperparameter of the space: a TrainConfig field and where its values come from."""

    name: str  # the TrainConfig field
    kind: str  # log, uniform, int, choice
    args: tuple  # (low, high) for the ranges; the values (in the field's kind) for a choice

    def __str__(self) -> str:
        return f"{self.name}={self.kind}({','.join(_text(v) for v in self.args)})"

    @property
    def integer(self) -> bool:
        return field_kind(self.name) == "int"

    def _round(self, value):
        return int(np.rint(value)) if self.integer else float(f"{value:.3g}")

    def sample(self, rng: np.random.Generator):
        """One value (§11.4.4): log-uniform, uniform, a uniform integer or a uniform choice."""
        if self.kind == "choice":
            return self.args[int(rng.integers(len(self.args)))]
        low, high = self.args
        if self.kind == "int":
            return int(rng.integers(low, high + 1))
        if self.kind == "log":
            return self._round(math.exp(rng.uniform(math.log(low), math.log(high))))
        return self._round(rng.uniform(low, high))

    def grid(self, points: int) -> list:
        """The values a grid takes (§11.4.3): ``points`` of a range, every value of a choice."""
        if self.kind == "choice":
            return list(self.args)
        low, high = self.args
        values = np.geomspace(low, high, points) if self.kind == "log" else np.linspace(low, high, points)
        if self.kind == "int" or self.integer:
            return sorted({int(np.rint(v)) for v in values})
        return [float(f"{v:.3g}") for v in values]


def _text(value) -> str:
    """A value as the space syntax and the tables write it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return "-".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _field(name, item) -> str:
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    field = name.replace("-", "_")
    if field in NOT_SEARCHABLE:
        raise ConfigError(
            f"{item}: {name} cannot be searched (it says where or how a run goes, not what it "
            "trains); give it as an option instead"
        )
    if field not in fields:
        searchable = [f for f in fields if f not in NOT_SEARCHABLE]
        close = difflib.get_close_matches(field, searchable, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"{item}: unknown field {name!r} in the search space ({hint}searchable: {', '.join(searchable)})"
        )
    return field


def _value(field, text, item):
    """``text`` as a value of the field's kind (int, float, str, bool, layer sizes)."""
    kind, text = field_kind(field), text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if kind == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if kind == "tuple":
            return () if text.lower() == "none" else tuple(int(part) for part in text.split("-"))
        if not text:
            raise ValueError
        return text
    except ValueError:
        what = {
            "int": "an integer",
            "float": "a number",
            "bool": "on or off",
            "tuple": "layer sizes such as 512 or 1024-512 (none for none)",
        }.get(kind, "a value")
        raise ConfigError(f"{item}: {text!r} is not {what}, as {field} needs") from None


def _dimension(name, kind, args_text, item) -> Dimension:
    field = _field(name, item)
    if kind not in KINDS:
        raise ConfigError(f"{item}: unknown kind {kind!r}; use one of {', '.join(k + '()' for k in KINDS)}")
    parts = [part.strip() for part in args_text.split(",")]
    if kind == "choice":
        if parts == [""]:
            raise ConfigError(f"{item}: choice() needs at least one value, e.g. {field}=choice(a,b)")
        values = tuple(_value(field, part, item) for part in parts)
        return Dimension(field, kind, tuple(dict.fromkeys(values)))
    if field_kind(field) not in ("int", "float"):
        raise ConfigError(f"{item}: {field} is not a number; give its values with choice(...)")
    if len(parts) != 2 or "" in parts:
        raise ConfigError(
            f"{item}: {kind}() takes two numbers, the range's min and max, e.g. {field}={kind}(1,2)"
        )
    try:
        low, high = (int(p) if kind == "int" else float(p) for p in parts)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        raise ConfigError(f"{item}: the bounds of {kind}() must be {what}, got {args_text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{item}: the bounds must be finite")
    if low >= high:
        raise ConfigError(f"{item}: the range's min ({low:g}) must be below its max ({high:g})")
    if kind == "log" and low <= 0:
        raise ConfigError(f"{item}: a log() range must be positive, got min {low:g}; use uniform() for 0")
    return Dimension(field, kind, (low, high))


def parse_space(space) -> list:
    """The Dimensions of a space given as one string or a list of ``NAME=KIND(ARGS)`` items (module
    docstring). ConfigError, one line, for an empty or malformed space, an unknown or repeated field, a
    value of the wrong kind, a range with min ≥ max."""
    text = " ".join(space) if isinstance(space, (list, tuple)) else str(space or "")
    if not text.strip():
        raise ConfigError(
            "the search space is empty: give at least one NAME=KIND(ARGS), e.g. "
            "'lr=log(1e-3,1) hidden=choice(256,512)'"
        )
    dims, pos = [], 0
    while pos < len(text.rstrip()):
        match = _ITEM.match(text, pos)
        if match is None:
            rest = text[pos:].strip().split()[0]
            raise ConfigError(
                f"malformed search space at {rest!r}: expected NAME=KIND(ARGS), KIND one of "
                f"{', '.join(KINDS)}, e.g. 'lr=log(1e-3,1)' (quote the space in the shell)"
            )
        name, kind, args = match.groups()
        dims.append(_dimension(name, kind, args, match.group(0).strip()))
        pos = match.end()
    names = [d.name for d in dims]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"the search space names {', '.join(repeated)} more than once")
    return dims


def sample_random(dims, trials, seed=0) -> list:
    """``trials`` settings (dicts field -> value) drawn in order from one generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return [{d.name: d.sample(rng) for d in dims} for _ in range(trials)]


def grid(dims, points=3) -> list:
    """Every point of the grid (the last dimension varies fastest)."""
    names = [d.name for d in dims]
    return [dict(zip(names, values)) for values in itertools.product(*(d.grid(points) for d in dims))]


@dataclasses.dataclass
class SearchResult:
    """The ranked trials (best first, by validation accuracy or bits per character) and where the search
    lives."""

    folder: str
    dims: list
    trials: list  # dicts: trial, settings, status, val_accuracy, test_accuracy (or val_bpc, test_bpc),
    # best_epoch, epochs, seconds, command
    csv_path: str
    plot_path: str | None
    ran: int  # trials run (or continued) by this call
    skipped: int  # trials finished before and read back
    metric: object = None  # _trials.Metric: what ranked them (ACCURACY or BITS_PER_CHAR)

    @property
    def best(self) -> dict:
        return self.trials[0]


def _identity(method, dims, grid_points, seed, base) -> dict:
    shared = {k: v for k, v in base.items() if k not in ("out", "quiet", "data_dir", "resume")}
    identity = {"method": method, "space": " ".join(map(str, dims)), "seed": seed, "options": shared}
    if method == "grid":
        identity["grid_points"] = grid_points
    return json.loads(json.dumps(identity))  # tuples as lists, as search.json holds them


def _check_options(method, trials, grid_points, jobs):
    if method not in ("random", "grid"):
        raise ConfigError(f"--method must be random or grid, got {method!r}")
    for name, value, low in (("--trials", trials, 1), ("--grid-points", grid_points, 2), ("--jobs", jobs, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"{name} must be an integer of at least {low}, got {value!r}")


def _settings_text(settings) -> str:
    return " ".join(f"{k}={_text(v)}" for k, v in settings.items())


def _open_folder(out, identity) -> pathlib.Path:
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    folder = pathlib.Path(out) if out is not None else pathlib.Path("runs") / f"search-{digest}"
    saved = folder / "search.json"
    if saved.exists():
        try:
            old = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {saved}: {err}") from None
        if old != identity:
            differ = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ConfigError(
                f"{folder} holds another search ({', '.join(differ)} differ); re-run that "
                "search's own command to continue it, or choose another --out"
            )
    elif folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty and holds no search.json; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    return folder


def search(
    space,
    base: dict | None = None,
    *,
    method="random",
    trials=None,
    grid_points=3,
    seed=0,
    out=None,
    jobs=1,
    plot=True,
    log=print,
) -> SearchResult:
    """Run (or continue) a random or grid search over ``space`` (module docstring).

    ``base`` holds the TrainConfig fields every trial shares (None: the trial's model's default), as
    ``handgrad train``'s options give them. ``trials``: random 10 by default, grid every point. ``out``:
    the search folder (default ``runs/search-<hash of the search>``, so the same search finds its folder).
    Every trial's configuration is checked before the first is trained: ConfigError, one line, otherwise.
    """
    _check_options(method, trials, grid_points, jobs)
    dims = parse_space(space)
    base = {k: v for k, v in dict(base or {}).items() if k not in ("out", "resume", "quiet")}
    if method == "random":
        settings = sample_random(dims, 10 if trials is None else trials, seed)
    else:
        settings = grid(dims, grid_points)
        if trials is not None and trials < len(settings):
            log(f"note: running the first {trials} of the grid's {len(settings)} points")
            settings = settings[:trials]
    configs = []
    for i, values in enumerate(settings, 1):
        try:
            configs.append(TrainConfig(**{**base, **values}).validate())
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"trial {i} ({_settings_text(values)}): {err}") from None
    metric = metric_of(configs[0])  # the data, the same for every trial, is not searchable
    folder = _open_folder(out, _identity(method, dims, grid_points, seed, base))
    log(
        f"{method} search of {len(settings)} trials over {' '.join(map(str, dims))} in {folder}"
        f"{f' ({jobs} processes, 1 BLAS thread each)' if jobs > 1 else ''}, ranked by {metric.name}; "
        "the same command continues it"
    )

    items = []
    for i, values in enumerate(settings, 1):
        trial_dir = folder / f"trial-{i:03d}"
        trial_dir.mkdir(exist_ok=True)
        record = trial_dir / "trial.json"
        stored = json.loads(json.dumps({"trial": i, "settings": values}))
        if record.exists() and json.loads(record.read_text(encoding="utf-8")) != stored:
            raise ConfigError(f"{record} holds other values than this search draws; choose another --out")
        record.write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
        items.append((i, {**base, **values}, str(trial_dir)))

    rows, counts = {}, {"ran": 0, "skipped": 0}
    width = len(str(len(settings)))

    def finished(i, result):
        counts["skipped" if result["skipped"] else "ran"] += 1
        rows[i] = {
            "trial": i,
            "settings": settings[i - 1],
            **result,
            "command": train_command(configs[i - 1]),
        }
        how = "finished before" if result["skipped"] else f"{result['seconds']:.1f} s"
        flag = "" if result["status"] == "done" else f" ({result['status']})"
        log(
            f"trial {i:>{width}}/{len(settings)}  val {metric.text(result[metric.key])}{flag}  "
            f"{_settings_text(settings[i - 1])}  [{how}]"
        )

    run_all(items, jobs, finished)
    ranked = sorted(rows.values(), key=metric.rank_key)
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    csv_path = folder / "results.csv"
    _write_csv(csv_path, ranked, dims, metric)
    plot_path = plot_search(ranked, dims, folder / "search.png", metric) if plot else None
    return SearchResult(
        folder=str(folder),
        dims=dims,
        trials=ranked,
        csv_path=str(csv_path),
        plot_path=None if plot_path is None else str(plot_path),
        ran=counts["ran"],
        skipped=counts["skipped"],
        metric=metric,
    )


def _write_csv(path, ranked, dims, metric=ACCURACY):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "trial",
                metric.key,
                f"{metric.test_key}_monitor",
                "best_epoch",
                "epochs",
                "seconds",
                "status",
                *(d.name for d in dims),
                "command",
            ]
        )
        for r in ranked:
            test = "" if r[metric.test_key] is None else f"{r[metric.test_key]:.4f}"
            writer.writerow(
                [
                    r["rank"],
                    r["trial"],
                    f"{r[metric.key]:.4f}",
                    test,
                    r["best_epoch"],
                    r["epochs"],
                    r["seconds"],
                    r["status"],
                    *(_text(r["settings"][d.name]) for d in dims),
                    r["command"],
                ]
            )


def format_table(result: SearchResult, limit=None) -> str:
    """The ranked trials as ``handgrad search`` prints them, and the best trial's command."""
    metric = result.metric or ACCURACY
    head = (
        f"{'rank':>4}  {'trial':>5}  {metric.short:>7}  {'test (monitor)':>14}  {'epochs':>6}  "
        f"{'seconds':>7}  settings"
    )
    lines = [head]
    for r in result.trials[:limit]:
        test = "" if r[metric.test_key] is None else metric.cell(r[metric.test_key])
        status = "" if r["status"] == "done" else f"  ({r['status']})"
        lines.append(
            f"{r['rank']:>4}  {r['trial']:>5}  {metric.cell(r[metric.key]):>7}  {test:>14}  "
            f"{r['best_epoch']:>2}/{r['epochs']:<3}  {r['seconds']:>7.1f}  "
            f"{_settings_text(r['settings'])}{status}"
        )
    best = result.best
    lines.append(
        f"best by {metric.name}: trial {best['trial']} ({metric.text(best[metric.key])}); "
        f"wrote {result.csv_path}" + (f" and {result.plot_path}" if result.plot_path else "")
    )
    lines.append(f"train it with: {best['command']}")
    return "\n".join(lines)


def plot_search(ranked, dims, path, metric=ACCURACY):
    """Validation accuracy (or bits per character) against each hyperparameter (log axis for log ranges),
    the best trial marked."""
    from ..plots import _figure, _save

    cols = min(len(dims), 3)
    rows = math.ceil(len(dims) / cols)
    fig = _figure(4.2 * cols, 3.4 * rows)
    if fig is None:
        return None
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    scale = 100 if metric.higher_is_better else 1
    acc = np.array([scale * r[metric.key] for r in ranked])
    for ax, dim in zip(axes, dims):
        values = [r["settings"][dim.name] for r in ranked]
        if dim.kind == "choice":
            labels = [_text(v) for v in dim.args]
            x = np.array([labels.index(_text(v)) for v in values], dtype=float)
            ax.set_xticks(range(len(labels)), labels=labels, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            x = np.array(values, dtype=float)
            if dim.kind == "log":
                ax.set_xscale("log")
        ax.plot(x, acc, "o", color="C0", ms=5, alpha=0.8)
        ax.plot(x[:1], acc[:1], "*", color="C3", ms=12, label="best")
        ax.set(xlabel=dim.name, ylabel=f"{metric.name}{' (%)' if metric.higher_is_better else ''}")
        ax.grid(alpha=0.3)
    for ax in axes[len(dims) :]:
        ax.axis("off")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{len(ranked)} trials: {metric.name} against each hyperparameter", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
