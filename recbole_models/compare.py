"""Train several models on one dataset under the same protocol and tabulate them.

::

    python -m recbole_models.compare --models MLLMRec BPR LightGCN "MLLMRec w/o RS" \\
        --dataset ml-100k --config_files data/ml-100k.yaml --out results/ml-100k.md \\
        [--seeds 5 --baseline BPR] [--jobs 2] [--resume | --overwrite]

A name is one of ours, any RecBole model, or a *variant*: a named model plus
config overrides from ``recbole_models/yaml/variants.yaml`` (the paper's
ablations) or a ``--variants`` YAML file. Each run is a full
:func:`recbole_models.run.run_recbole` (same data files, split, evaluator and
seed). ``--key=value`` overrides apply to every run and win over a variant's.

Results: every finished run (name, seed) is appended at once to ``<out>.jsonl``
(one JSON object a line, with its error if it failed), so nothing finished is lost;
at the end the table goes to ``<out>`` (Markdown) and stdout, the list to
``<out>.json``, and a bar chart of the test metrics at the ``valid_metric``'s cut-off
(mean, ± std over the seeds as error bars) to ``<out>.png``. A failed run is a table
row with its error in one line; the other runs go on. Existing results are never
overwritten silently: ``--overwrite`` replaces them, ``--resume`` keeps every
successful run already in the JSONL (made with the same settings) and trains only the
rest. The columns are the test metrics the config computes (``metrics`` × ``topk``),
and the header names the ``valid_metric`` that chose the epoch.

``--seeds N`` (seeds ``0..N-1``) or ``--seed_list S ...`` runs every name once per
seed; the table then shows mean ± sample std per metric, and with ``--baseline
NAME`` each other row's mean difference to that name and a two-sided paired
t-test over the common seeds (``scipy.stats.ttest_rel``); cells with
``p < --alpha`` (0.05) are marked ``*``. ``--baseline ROW=REF ...`` gives rows their
own reference instead (``FREEDOM+GR=FREEDOM LATTICE+GR=LATTICE``: each "+GR" row
against its vanilla model); a plain ``NAME`` among them is the reference of the
rows without one.

``--jobs K`` trains each run in its own fresh process, ``K`` at a time, each with
one torch thread. The scores then do not depend on ``K``; they may differ in the
last digits from an in-process run (``--jobs 0``), whose thread count changes the
summation order. Multi-process (distributed) training of one model is
``python -m recbole_models.run --nproc``; compare refuses ``--nproc``,
``--world_size``, ``--ip``, ``--port`` and ``--group_offset``.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from recbole_models import get_model
from recbole_models.config import (ConfigError, check_keys, check_no_pickles, computed_metrics,
                                   load_yaml, split_config_files)
from recbole_models.figures.bars import bar_chart
from recbole_models.run import (ArgumentParser, add_common_arguments, cli, make_config, one_line, parse_args,
                                quiet_recbole_warnings, run_recbole)
from recbole_models.workers import worker_pool

_DEFAULT_VARIANTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yaml", "variants.yaml")
# Short column names; other metrics keep RecBole's name.
_SHORT = {"recall": "R", "ndcg": "N", "hit": "Hit", "precision": "P", "mrr": "MRR", "map": "MAP"}


def load_variants(paths: Optional[List[str]] = None) -> Dict[str, dict]:
    """``{name: {"model": ..., **overrides}}`` from the default file and ``paths`` (later
    wins), read with the typed loader; an unknown config key is an error naming the file."""
    variants: Dict[str, dict] = {}
    for path in [_DEFAULT_VARIANTS] + list(paths or []):
        data = load_yaml(path)
        for name, spec in data.items():
            if not isinstance(spec, dict) or "model" not in spec:
                raise ConfigError(f"{path}: variant {name!r} needs a `model` key")
            check_keys(spec, f"{path}: variant {name!r}")
            check_no_pickles(spec, f"{path}: variant {name!r}")
            variants[str(name)] = dict(spec)
    return variants


def resolve(name: str, variants: Dict[str, dict]):
    """``(model, overrides)`` for a run name."""
    if name in variants:
        spec = dict(variants[name])
        return spec.pop("model"), spec
    return name, {}


def header(metric: str) -> str:
    """Column name of a metric: ``recall@20`` → ``R@20``."""
    base, _, k = metric.partition("@")
    short = _SHORT.get(base.lower(), base.upper() if len(base) <= 4 else base)
    return f"{short}@{k}" if k else short


def plotted_metrics(metrics: List[str], valid_metric: str) -> List[Tuple[str, str]]:
    """The bar chart's ``(metric, label)`` pairs: those at the cut-off of ``valid_metric``
    (``Recall@20`` → ``recall@20``, ``ndcg@20``), else the first two."""
    _, _, k = valid_metric.partition("@")
    chosen = [m for m in metrics if k and m.endswith(f"@{k}")] or metrics[:2]
    return [(m, header(m)) for m in chosen]


def _mean_std(values: List[float]) -> Tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_test(results: List[Dict], name: str, baseline: str, metric: str):
    """``(mean difference, two-sided p, n)`` of ``name`` − ``baseline`` on ``metric``
    over their common seeds (paired t-test, ``scipy.stats.ttest_rel``)."""
    from scipy.stats import ttest_rel

    def by_seed(n):
        return {r["seed"]: r["test_result"][metric] for r in results
                if r["name"] == n and not r.get("error") and metric in r["test_result"]}

    a, b = by_seed(name), by_seed(baseline)
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        return float("nan"), float("nan"), 0
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    diff = sum(xi - yi for xi, yi in zip(x, y)) / len(seeds)
    if len(seeds) < 2:
        return diff, float("nan"), len(seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all differences equal: p is nan
        p = float(ttest_rel(x, y, alternative="two-sided").pvalue)
    return diff, p, len(seeds)


def parse_baselines(items: Optional[List[str]], names: List[str]) -> Dict[str, str]:
    """``{row: its reference}`` from ``--baseline`` items: ``ROW=REF`` pairs and at most
    one plain ``NAME``, the reference of every other row. Each name must be in ``names``."""
    pairs: Dict[str, str] = {}
    default = None
    for item in items or []:
        row, eq, ref = item.partition("=")
        for n in ([row, ref] if eq else [item]):
            if n not in names:
                raise ConfigError(f"argument --baseline: {n!r} (in {item!r}) is not among --models")
        if not eq:
            if default is not None:
                raise ConfigError(f"argument --baseline: two plain names ({default!r}, {item!r}); "
                                  f"give the other rows' references as ROW=REF")
            default = item
        elif row == ref:
            raise ConfigError(f"argument --baseline: {item!r} compares a row with itself")
        elif row in pairs:
            raise ConfigError(f"argument --baseline: {row!r} has two references")
        else:
            pairs[row] = ref
    if default is not None:
        pairs = dict({n: default for n in names if n != default}, **pairs)
    return pairs


def markdown_table(results: List[Dict], metrics: Optional[List[str]] = None,
                   baseline=None, alpha: float = 0.05) -> str:
    """One row per name (in order of first appearance). One seed per name: the scores;
    several: mean ± std, and the difference to the row's reference with ``*`` where the
    paired t-test gives ``p < alpha``. ``baseline``: one name (every other row's
    reference) or ``{row: reference}``. ``metrics`` default to those in the results."""
    if isinstance(baseline, str):
        baseline = {r["name"]: baseline for r in results if r["name"] != baseline}
    baseline = baseline or {}
    if metrics is None:
        metrics = []
        for r in results:
            metrics += [m for m in r.get("test_result", {}) if m not in metrics]
    names: List[str] = []
    for r in results:
        if r["name"] not in names:
            names.append(r["name"])
    multi = any(sum(r["name"] == n for r in results) > 1 for n in names)
    failed = any(r.get("error") for r in results)
    cols = ["Model"] + (["Seeds"] if multi else []) + [header(m) for m in metrics] \
        + ["Best epoch", "Train time (s)"] + (["Error"] if failed else [])
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1 - failed)
             + ("---|" if failed else "")]
    for n in names:
        rows = [r for r in results if r["name"] == n]
        ok = [r for r in rows if not r.get("error")]
        errors = "; ".join(sorted({r["error"] for r in rows if r.get("error")}))
        cells = [n] + ([f"{len(ok)}/{len(rows)}"] if multi else [])
        for m in metrics:
            vals = [r["test_result"][m] for r in ok if m in r["test_result"]]
            if not vals:
                cells.append("–")
                continue
            if not multi:
                cells.append(f"{vals[0]:.4f}")
                continue
            mean, std = _mean_std(vals)
            cell = f"{mean:.4f} ± {std:.4f}" if len(vals) > 1 else f"{mean:.4f}"  # one seed: no std
            if n in baseline:
                diff, p, _ = paired_test(results, n, baseline[n], m)
                if not math.isnan(diff):
                    cell += f" ({diff:+.4f}{'*' if p < alpha else ''})"
            cells.append(cell)
        epochs = [r["best_epoch"] for r in ok]
        times = [r["train_time"] for r in ok]
        cells.append((f"{epochs[0]}" if not multi else f"{sum(epochs) / len(epochs):.1f}") if ok else "–")
        cells.append(f"{sum(times) / len(times):.1f}" if ok else "–")
        if failed:
            cells.append(errors.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _one_run(name, model, seed, dataset, config_file_list, config_dict, saved) -> Dict:
    start = time.perf_counter()
    try:
        result = run_recbole(model, dataset, config_file_list, config_dict, saved=saved)
    except Exception as err:  # noqa: BLE001 - a failed run is a row of the table
        result = {"model": model, "test_result": {}, "best_valid_result": {}, "best_epoch": -1,
                  "train_time": time.perf_counter() - start, "error": one_line(err)}
    result.update(name=name, seed=seed)
    return result


def _run_in_worker(task) -> Tuple[int, Dict]:
    i, args = task
    import torch

    torch.set_num_threads(1)
    with quiet_recbole_warnings():
        return i, _one_run(*args)


def fingerprint(model: str, dataset: str, config_file_list, config_dict: dict) -> str:
    """Hash of everything a run's result depends on (file contents, overrides) but
    not its seed: ``--resume`` reuses a stored result only under the same fingerprint."""
    files = []
    for path in split_config_files(config_file_list):
        with open(path, "rb") as f:
            files.append(hashlib.sha256(f.read()).hexdigest())
    blob = json.dumps({"model": model, "dataset": dataset, "files": files, "config": config_dict},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compare(names: List[str], dataset: str, config_file_list=None, config_dict=None,
            variants: Optional[Dict[str, dict]] = None, saved: bool = True, jobs: int = 0,
            on_result: Optional[Callable[[Dict], None]] = None, seeds: Optional[Iterable[int]] = None,
            previous: Optional[Iterable[Dict]] = None, train: bool = True) -> List[Dict]:
    """Trains and tests every (name, seed); returns their results in the order of
    ``names`` then ``seeds``: each RecBole result dict with ``name``, ``seed``,
    ``best_epoch``, ``train_time`` and ``fingerprint``, or for a failed run
    ``error`` (one line) with empty ``test_result``.

    Args:
        names: model or variant names (see :func:`resolve`).
        dataset, config_file_list, config_dict: as for :func:`recbole_models.run.run_recbole`;
            ``config_dict`` applies to every run and wins over a variant's overrides.
        variants: ``{name: {"model": ..., **overrides}}``; default :func:`load_variants`.
        saved: keep the best checkpoint (and test it) as RecBole does.
        jobs: ``0`` runs one after another in this process with torch's thread
            settings; ``K >= 1`` runs each in a fresh spawned process, ``K`` at a time,
            with one torch thread each (the scores do not depend on ``K``).
        on_result: called with each result as soon as its run finishes.
        seeds: run each name once per seed (config key ``seed``); ``None``: once, with
            the config's seed (``seed`` is then ``None`` in the result).
        previous: results of earlier runs; a successful one with the same name, seed
            and :func:`fingerprint` is reused instead of training again.
        train: ``False`` trains nothing: the result is the ``previous`` runs that match,
            in the same order, and a (name, seed) without one is left out.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0:
        raise ValueError(f"jobs must be an integer >= 0, got {jobs!r}")
    variants = load_variants() if variants is None else variants
    seed_list = [None] if seeds is None else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must not be empty")
    if seeds is not None and "seed" in (config_dict or {}):
        raise ConfigError("give the seeds either with `seeds` or as config key `seed`, not both")
    runs = []
    for name in names:
        model, overrides = resolve(name, variants)
        get_model(model)  # a misspelt last name fails now, not after the other runs
        settings = dict(overrides, **(config_dict or {}))
        runs.append((name, model, settings, fingerprint(model, dataset, config_file_list, settings)))
    done = {(r["name"], r.get("seed"), r.get("fingerprint")): r for r in previous or [] if not r.get("error")}
    order, tasks, results = [], [], {}
    for name, model, settings, fp in runs:
        for seed in seed_list:
            key = (name, seed, fp)
            order.append(key)
            if key in done:
                results[key] = done[key]
            elif key not in dict.fromkeys(k for k, _ in tasks):
                run_dict = dict(settings) if seed is None else dict(settings, seed=seed)
                tasks.append((key, (name, model, seed, dataset, config_file_list, run_dict, saved)))

    if not train:
        return [results[key] for key in order if key in results]
    # Seed-major: every name's first seed trains before any name's second, so a sweep cut
    # short (or killed, then --resume'd later) has whole seeds to compare, not whole names.
    tasks.sort(key=lambda task: seed_list.index(task[0][1]))

    def finish(key, result):
        result["fingerprint"] = key[2]
        results[key] = result
        if on_result:
            on_result(result)

    if jobs == 0:
        for key, args in tasks:
            finish(key, _one_run(*args))
    elif tasks:
        keys = [key for key, _ in tasks]
        with worker_pool(jobs) as pool:
            for i, result in pool.imap_unordered(_run_in_worker, list(enumerate(a for _, a in tasks))):
                finish(keys[i], result)
    return [results[key] for key in order]


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".compare-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_results(path: str) -> List[Dict]:
    """The results in JSONL file ``path``; a torn last line (a kill mid-write) is dropped."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the write was cut
                break
            raise ConfigError(f"{path}: line {number} is not a JSON result") from None
    return out


class ResultLog:
    """Appends each result as one JSON line, flushed and synced, as it finishes."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb+") as f:  # cut a torn last line so the next one starts clean
                data = f.read()
                if not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)

    def __call__(self, result: Dict) -> None:
        record = {k: v for k, v in result.items() if k != "saved_model_file"}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m recbole_models.compare",
                                     description=__doc__.split("\n")[0],
                                     epilog="Other --key=value arguments override config keys in every run; "
                                            "the value is read as YAML (1e-3, ~, [10, 20]).")
    parser.add_argument("--models", "-m", nargs="+", default=["MLLMRec", "BPR", "LightGCN"],
                        help="model or variant names")
    parser.add_argument("--variants", nargs="*", default=None, help="extra variant YAML files")
    parser.add_argument("--out", default=None, help="Markdown file for the table (default results/<dataset>.md); "
                                                    "results also go to <out>.jsonl as they finish, and <out>.json")
    parser.add_argument("--jobs", "-j", type=int, default=0,
                        help="runs at once, each in its own process with one torch thread "
                             "(default 0: one after another in this process)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=None, help="run each name with seeds 0..N-1")
    seeds.add_argument("--seed_list", type=int, nargs="+", default=None, help="run each name with these seeds")
    parser.add_argument("--baseline", nargs="+", default=None, metavar="NAME | ROW=REF",
                        help="name to test the others against (paired t-test), or ROW=REF pairs giving "
                             "rows their own reference")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for the * mark")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing results of --out")
    existing.add_argument("--resume", action="store_true",
                          help="keep the finished runs in <out>.jsonl and train only the others")
    existing.add_argument("--report", action="store_true",
                          help="train nothing: write the table of the finished runs in <out>.jsonl "
                               "(a sweep still running or cut short) and list the missing ones")
    add_common_arguments(parser)
    for flag in ("--nproc", "--world_size", "--ip", "--port", "--group_offset"):
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS)
    args, overrides = parse_args(parser, argv)
    for flag in ("nproc", "world_size", "ip", "port", "group_offset"):
        if getattr(args, flag) is not None:
            parser.error(f"argument --{flag}: compare trains each run in one process; "
                         f"use python -m recbole_models.run --{flag} for a distributed run")
    if args.jobs < 0:
        parser.error(f"argument --jobs: must be >= 0, got {args.jobs}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"argument --seeds: must be >= 1, got {args.seeds}")
    seed_list = list(range(args.seeds)) if args.seeds is not None else args.seed_list
    try:
        baselines = parse_baselines(args.baseline, args.models)
    except ConfigError as err:
        parser.error(str(err))
    variants = load_variants(args.variants)
    out = args.out or os.path.join("results", f"{args.dataset}.md")
    stem = os.path.splitext(out)[0]
    paths = [out, stem + ".json", stem + ".jsonl", stem + ".png"]
    if args.report and not os.path.exists(paths[2]):
        raise ConfigError(f"{paths[2]}: no results to report (--report reads the finished runs there)")
    if not (args.overwrite or args.resume or args.report):
        there = [p for p in paths if os.path.exists(p)]
        if there:
            raise ConfigError(f"{there[0]} exists: pass --overwrite to replace the results, "
                              f"--resume to continue them, or --out for another file")
    if args.overwrite and os.path.exists(paths[2]):
        os.unlink(paths[2])
    # Columns and header from the config of the first run (metrics, topk, valid_metric).
    model, first = resolve(args.models[0], variants)
    config = make_config(model, args.dataset, args.config_files, dict(first, **overrides))
    metrics, valid = computed_metrics(config), config["valid_metric"]
    previous = read_results(paths[2]) if (args.resume or args.report) else []
    log = None if args.report else ResultLog(paths[2])

    def report(result):
        log(result)
        status = result["error"] if result.get("error") else ", ".join(
            f"{header(k)} {v:.4f}" for k, v in result["test_result"].items() if k in metrics)
        seed = "" if result.get("seed") is None else f" (seed {result['seed']})"
        print(f"-- {result['name']}{seed}: {status}", flush=True)

    results = compare(args.models, args.dataset, args.config_files, overrides, variants=variants,
                      jobs=args.jobs, on_result=report, seeds=seed_list, previous=previous,
                      train=not args.report)
    missing = []
    if args.report:
        have = {(r["name"], r.get("seed")) for r in results}
        missing = [f"{n} (seed {s})" if s is not None else n
                   for n in args.models for s in (seed_list or [None]) if (n, s) not in have]
        print(f"{len(results)} finished run(s) in {paths[2]}"
              + (f"; not finished: {', '.join(missing)}" if missing else ""))
    table = markdown_table(results, metrics, baseline=baselines, alpha=args.alpha)
    title = f"# {args.dataset}: test results (epoch chosen on valid {valid})"
    if seed_list is not None:
        title += f", mean ± std over seeds {seed_list}"
        if args.report:
            title += " (finished runs only: see the Seeds column)"
        if baselines:
            refs = sorted(set(baselines.values()))
            to = refs[0] if len(refs) == 1 else "each row's reference: " + ", ".join(
                f"{row} vs {ref}" for row, ref in baselines.items())
            title += f"; (difference to {to}, * two-sided paired t-test over seeds p < {args.alpha})"
    write_atomic(out, f"{title}\n\n{table}\n" + (f"\nNot finished: {', '.join(missing)}.\n" if missing else ""))
    write_atomic(paths[1], json.dumps([{k: v for k, v in r.items() if k != "saved_model_file"}
                                       for r in results], indent=2, default=float))
    written = [out, paths[1]]
    if any(not r.get("error") for r in results):
        bar_chart(results, paths[3], f"{args.dataset}: test scores (epoch chosen on valid {valid})",
                  plotted_metrics(metrics, valid))
        written.append(paths[3])
    print(table)
    print(f"\nwritten: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
