r"""Hyper-parameter grid over any config keys, best point chosen on VALIDATION only.

::

    python -m recbole_models.grid --model MLLMRec --dataset ml-100k \
        --config_files data/ml-100k.yaml \
        --grid knn_threshold=0.3,0.5,0.7,0.9 --grid cooc_k=5,10,20 \
        --seeds 2024 2025 2026 --jobs 4 --out results/grid/ml-100k-mllmrec

Every combination of the ``--grid`` values is trained once per seed
(:mod:`recbole_models.sweep`: one JSON record per finished run in ``<out>.store/``,
so a killed grid resumes where it stopped). For each grid point :math:`g` over the
seeds :math:`S`:

.. math::
    \bar v_g = \tfrac{1}{|S|}\textstyle\sum_{s \in S} v_{g,s}, \qquad
    g^\star = \arg\max_g \bar v_g \quad(\arg\min \text{ when the metric is smaller-better})

with :math:`v_{g,s}` the model's ``valid_metric`` (e.g. Recall@20) at its best
epoch on the VALIDATION split. The table reports every point's valid and test
scores (mean ± sample std over seeds) and marks :math:`g^\star`; the test score
quoted as the grid's result is :math:`g^\star`'s. The test split never takes part
in any choice: not of the epoch (RecBole's early stopping is on validation), not
of the point. There is no option to select on test.

This differs from the MMRec toolbox (and the papers built on it), whose
``quick_start`` keeps, over a grid, the point with the best TEST score
(MMRec issue #64): the reported number is then the maximum of many noisy test
estimates, biased upwards, and the grid has effectively been tuned on the test set.

Outputs: ``<out>.md`` (Markdown table), ``<out>.json`` (the aggregated points),
and ``<out>.png``: a line plot (valid and test metric with ±std error bars) for
one key, or two heat maps (valid, test) for two keys. With more keys only the
table is written.

Values: ``--grid KEY=V1,V2,...`` reads each value as YAML (``0.7``, ``10``, ``~``
for ``None``, ``true``); ``--grid-file FILE`` reads ``{key: [values]}``. Strings are
refused (RecBole 1.2.1 ``eval``s string values of ``config_dict``); string settings
belong in a config file. ``--set KEY=VALUE`` fixes a key for every run.
"""
import argparse
import itertools
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from recbole_models.sweep import (Point, check_typed, load_yaml_file, mean_std, no_command_line, parse_value,
                                  run_points)

__all__ = ["expand_grid", "aggregate", "select_on_valid", "markdown_table", "plot_grid", "run_grid", "main"]

TEST_METRICS = ["recall@20", "ndcg@20"]


def expand_grid(grid: Dict[str, Sequence]) -> List[Dict]:
    """Every combination of the values, the first key varying slowest."""
    if not grid:
        raise ValueError("the grid is empty: give at least one --grid KEY=V1,V2,...")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid key `{key}` needs a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ValueError(f"grid key `{key}` repeats a value: {list(values)}")
        for v in values:
            check_typed({key: v}, f"grid key `{key}`")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _label(point: Dict) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in point.items())


def _fmt_value(v) -> str:
    return "None" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def aggregate(points: List[Dict], records: List[Dict], seeds: Sequence[int], valid_metric: str,
              test_metrics: Sequence[str] = TEST_METRICS) -> List[Dict]:
    """One row per grid point: mean and std over seeds of the valid metric and of each
    test metric, plus the mean best epoch. ``records`` are in the order
    ``points × seeds`` (point-major)."""
    rows = []
    n = len(seeds)
    for i, point in enumerate(points):
        recs = records[i * n:(i + 1) * n]
        row = {"point": point, "seeds": [r["seed"] for r in recs]}
        vals = [r["best_valid_result"].get(valid_metric) for r in recs]
        if any(v is None for v in vals):
            raise ValueError(f"valid metric {valid_metric!r} is not in the results "
                             f"(they have {sorted(recs[0]['best_valid_result'])})")
        row["valid"] = mean_std(vals)
        row["valid_per_seed"] = vals
        for m in test_metrics:
            row[m] = mean_std([r["test_result"].get(m, float("nan")) for r in recs])
        row["best_epoch"] = sum(r["best_epoch"] for r in recs) / n
        row["train_time"] = sum(r["train_time"] for r in recs) / n
        row["bigger"] = recs[0]["valid_score_bigger"]
        rows.append(row)
    return rows


def select_on_valid(rows: List[Dict]) -> int:
    """Index of the row with the best MEAN VALIDATION score (the first on ties)."""
    sign = 1 if rows[0]["bigger"] else -1
    return max(range(len(rows)), key=lambda i: (sign * rows[i]["valid"][0], -i))


def _pm(ms: Tuple[float, float]) -> str:
    mean, std = ms
    return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"


def markdown_table(rows: List[Dict], best: int, valid_metric: str, title: str,
                   test_metrics: Sequence[str] = TEST_METRICS) -> str:
    keys = list(rows[0]["point"])
    n_seeds = len(rows[0]["seeds"])
    head = keys + [f"valid {valid_metric}"] + [f"test {m}" for m in test_metrics] + ["best epoch", "train s"]
    lines = [f"# {title}", "",
             f"Mean ± sample std over {n_seeds} seed(s) {rows[0]['seeds']}. The best point (**bold**, ◀) "
             f"is chosen on the mean VALIDATION {valid_metric}; its test scores are the grid's result. "
             f"The test split chose nothing.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(keys) + "---:|" * (len(head) - len(keys))]
    for i, row in enumerate(rows):
        cells = [_fmt_value(row["point"][k]) for k in keys] + [_pm(row["valid"])] \
            + [_pm(row[m]) for m in test_metrics] + [f"{row['best_epoch']:.1f}", f"{row['train_time']:.1f}"]
        if i == best:
            cells = [f"**{c}**" for c in cells]
            cells[-1] += " ◀"
        lines.append("| " + " | ".join(cells) + " |")
    b = rows[best]
    lines += ["", f"Best on validation: {_label(b['point'])} → valid {valid_metric} {_pm(b['valid'])}, "
                  + ", ".join(f"test {m} {_pm(b[m])}" for m in test_metrics) + "."]
    return "\n".join(lines) + "\n"


def plot_grid(rows: List[Dict], best: int, valid_metric: str, test_metric: str, path: str,
              title: str) -> Optional[str]:
    """A line plot (one key) or two heat maps (two keys) of the valid and test metric;
    ``None`` (nothing written) for more keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(rows[0]["point"])
    n_seeds = len(rows[0]["seeds"])
    seeds_note = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    if len(keys) == 1:
        key = keys[0]
        labels = [_fmt_value(r["point"][key]) for r in rows]
        x = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 4))
        for name, series, marker in ((f"valid {valid_metric}", "valid", "o"),
                                     (f"test {test_metric}", test_metric, "s")):
            mean = np.array([r[series][0] for r in rows])
            std = np.array([r[series][1] for r in rows])
            ax.errorbar(x, mean, yerr=None if n_seeds < 2 else std, marker=marker, capsize=4, label=name)
        ax.axvline(best, color="grey", linestyle=":", label="chosen on validation")
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_xlabel(key)
        ax.set_ylabel("metric value (fraction, higher is better)")
        ax.legend()
        ax.grid(alpha=0.3)
    elif len(keys) == 2:
        k0, k1 = keys
        v0 = list(dict.fromkeys(json.dumps(r["point"][k0], sort_keys=True) for r in rows))
        v1 = list(dict.fromkeys(json.dumps(r["point"][k1], sort_keys=True) for r in rows))
        fig, axes = plt.subplots(1, 2, figsize=(2 * max(4.5, 1.1 * len(v1) + 2.5), max(3.5, 0.7 * len(v0) + 2)))
        panels = ((f"valid {valid_metric}", "valid"), (f"test {test_metric}", test_metric))
        for ax, (name, series) in zip(axes, panels):
            grid = np.full((len(v0), len(v1)), np.nan)
            text = [["" for _ in v1] for _ in v0]
            where = {}
            for i, r in enumerate(rows):
                a = v0.index(json.dumps(r["point"][k0], sort_keys=True))
                b = v1.index(json.dumps(r["point"][k1], sort_keys=True))
                grid[a, b] = r[series][0]
                std = r[series][1]
                text[a][b] = f"{r[series][0]:.3f}" + ("" if std != std else f"\n±{std:.3f}")
                where[i] = (a, b)
            im = ax.imshow(grid, cmap="viridis", aspect="auto")
            fig.colorbar(im, ax=ax, label=name)
            mid = np.nanmin(grid) + 0.5 * (np.nanmax(grid) - np.nanmin(grid))
            for a in range(len(v0)):
                for b in range(len(v1)):
                    ax.text(b, a, text[a][b], ha="center", va="center", fontsize=8,
                            color="black" if grid[a, b] > mid else "white")
            a, b = where[best]
            ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
            ax.set_xticks(range(len(v1)))
            ax.set_xticklabels([_fmt_value(json.loads(v)) for v in v1])
            ax.set_yticks(range(len(v0)))
            ax.set_yticklabels([_fmt_value(json.loads(v)) for v in v0])
            ax.set_xlabel(k1)
            ax.set_ylabel(k0)
            ax.set_title(name)
        title += "\n(red box: best mean valid score, chosen on validation only)"
    else:
        return None
    fig.suptitle(f"{title}\n({seeds_note})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _valid_metric(model: str, dataset: str, config_files, overrides) -> Tuple[str, bool]:
    """The run's ``valid_metric`` as RecBole names it in result dicts (lower case)."""
    from recbole_models.run import make_config

    with no_command_line():
        config = make_config(model, dataset, config_files, dict(overrides))
    return str(config["valid_metric"]).lower(), bool(config["valid_metric_bigger"])


def run_grid(name: str, dataset: str, config_files: Optional[List[str]], grid: Dict[str, Sequence],
             seeds: Sequence[int], out: str, fixed: Optional[Dict] = None, jobs: int = 0,
             keep_checkpoints: bool = False, variants: Optional[Dict] = None) -> Dict:
    """Trains the grid (resumably), writes ``<out>.md``, ``<out>.json`` and ``<out>.png``;
    returns ``{"rows", "best", "valid_metric", "table", "plot"}``.

    Args:
        name: a model or a variant name (:func:`recbole_models.compare.resolve`); the
            variant's overrides apply under the grid's.
        dataset, config_files: the dataset and its YAML files.
        grid: ``{key: [values]}``, typed values.
        seeds: one run per seed per point.
        out: output path without extension; the store is ``<out>.store/``.
        fixed: typed overrides for every run (``--set``).
        jobs, keep_checkpoints: as for :func:`recbole_models.sweep.run_points`.
        variants: ``{name: {"model": ..., **overrides}}`` (default: the shipped ones).
    """
    from recbole_models.compare import load_variants, resolve

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {list(seeds)}")
    model, variant = resolve(name, load_variants() if variants is None else variants)
    fixed = check_typed(dict(fixed or {}), "--set")
    clash = sorted(set(fixed) & set(grid))
    if clash:
        raise ValueError(f"keys both fixed (--set) and in the grid: {clash}")
    combos = expand_grid(grid)
    base = dict(variant, **fixed)
    check_typed(base, f"variant {name!r}")
    valid_metric, _ = _valid_metric(model, dataset, config_files, base)
    points = [Point(name, model, dict(base, **combo), seed) for combo in combos for seed in seeds]
    total = len(points)
    done = {"stored": 0, "trained": 0}

    def report(record, trained):
        done["trained" if trained else "stored"] += 1
        how = "trained" if trained else "from store"
        v = record["best_valid_result"].get(valid_metric, float("nan"))
        print(f"[{done['stored'] + done['trained']}/{total}] {how}: "
              f"{_label({k: record['overrides'].get(k) for k in grid})} seed {record['seed']}: "
              f"valid {valid_metric} {v:.4f}", flush=True)

    records = run_points(points, dataset, config_files, out + ".store", jobs=jobs,
                         keep_checkpoints=keep_checkpoints, on_record=report)
    rows = aggregate(combos, records, seeds, valid_metric)
    best = select_on_valid(rows)
    title = f"{dataset}: {name} grid over {', '.join(grid)}"
    table = markdown_table(rows, best, valid_metric, title)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump({"name": name, "model": model, "dataset": dataset, "valid_metric": valid_metric,
                   "seeds": seeds, "best": best, "rows": rows}, f, indent=1, default=float)
    plot = plot_grid(rows, best, valid_metric, "recall@20", out + ".png", title)
    print(f"{done['trained']} run(s) trained, {done['stored']} from the store")
    return {"rows": rows, "best": best, "valid_metric": valid_metric, "table": table, "plot": plot}


def _parse_pairs(items: Sequence[str], flag: str, lists: bool) -> Dict:
    out: Dict = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE{',VALUE...' if lists else ''}")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"{flag} {item!r}: empty key")
        if key in out:
            raise ValueError(f"{flag}: key `{key}` given twice")
        if lists:
            value = parse_value(text, f"{flag} {key}")
            if not isinstance(value, list):
                value = [parse_value(t, f"{flag} {key}") for t in text.split(",")]
        else:
            value = parse_value(text, f"{flag} {key}")
        out[key] = value
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_models.grid", description=__doc__.split("\n")[0])
    parser.add_argument("--model", "-m", required=True, help="model or variant name (e.g. MLLMRec, 'SOIL+GR')")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", nargs="*", default=None, help="YAML config files of every run")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a key and its values (YAML: 0.7, 10, ~ for None, true); repeat for more keys")
    parser.add_argument("--grid-file", help="YAML mapping {key: [values]} (added to --grid)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a typed override for every run (e.g. --set epochs=200)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024], help="seeds (default 2024)")
    parser.add_argument("--variants", nargs="*", default=None, help="extra variant YAML files")
    parser.add_argument("--out", default=None,
                        help="output path without extension (default results/grid/<dataset>-<model>)")
    parser.add_argument("--jobs", "-j", type=int, default=0,
                        help="runs at once, each in its own process with one torch thread (default 0: in this process)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep every run's best checkpoint")
    args = parser.parse_args(argv)
    try:
        grid = _parse_pairs(args.grid, "--grid", lists=True)
        if args.grid_file:
            extra = load_yaml_file(args.grid_file) or {}
            if not isinstance(extra, dict):
                raise ValueError(f"{args.grid_file}: expected a mapping {{key: [values]}}")
            for key in extra:
                if key in grid:
                    raise ValueError(f"{args.grid_file}: key `{key}` is also given by --grid")
            grid.update(extra)
        fixed = _parse_pairs(args.set, "--set", lists=False)
        if args.jobs < 0:
            raise ValueError(f"--jobs must be >= 0, got {args.jobs}")
        from recbole_models.compare import load_variants

        variants = load_variants(args.variants)
        safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.model)
        out = args.out or os.path.join("results", "grid", f"{args.dataset}-{safe_name}")
        result = run_grid(args.model, args.dataset, args.config_files, grid, args.seeds, out, fixed,
                          args.jobs, args.keep_checkpoints, variants)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(result["table"])
    print(f"written: {out}.md, {out}.json" + (f", {result['plot']}" if result["plot"] else
                                              " (no plot: more than two grid keys)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
