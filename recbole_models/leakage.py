r"""Leakage audit: how much do user texts built from validation/test interactions
inflate a model's test scores?

::

    python -m mllmrec_pyg encode data/ml-100k --user-texts history --user-suffix useremb_history
    python -m mllmrec_pyg encode data/ml-100k --user-texts history-leaky    # LEAKY: useremb_history_leaky
    python -m recbole_models.leakage --dataset ml-100k --config_files data/ml-100k.yaml \
        --clean useremb_history --leaky useremb_history_leaky --seeds 2024 2025 2026 2027 2028 \
        --out results/leakage/ml-100k-history

The same model (default MLLMRec) is trained with the CLEAN user feature file (texts
from the training split only) and with the LEAKY one (texts from all of the user's
interactions, train + valid + test, as the paper's published scripts build them),
once per seed, everything else equal. Runs are paired by seed (same initialisation
and negative samples up to the user features). For a test metric :math:`m` and
seeds :math:`s = 1..n`:

.. math::
    d_s = m^{leaky}_s - m^{clean}_s, \qquad
    \bar d \pm t_{0.975,\,n-1}\, \frac{\mathrm{sd}(d)}{\sqrt n}

is the inflation with its 95% confidence interval (paired t; ``scipy.stats``), and
the p-value is the two-sided paired t-test ``scipy.stats.ttest_rel(leaky, clean)``.
The CI needs at least two seeds; the issue asks for five.

The two feature files are chosen by their suffix: the dataset YAML's user feature
entry (the ``additional_feat_suffix`` whose ``load_col`` columns hold
``user_feature_field``, ``uid`` by default) is replaced by ``--clean`` / ``--leaky``
(``load_col`` follows). Runs are stored as they finish
(:mod:`recbole_models.sweep`, ``<out>.store/``): a killed audit resumes.
Outputs ``<out>.md`` and ``<out>.json``; every leaky row is labelled LEAKY.
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from recbole_models.sweep import Point, check_typed, mean_std, no_command_line, run_points

__all__ = ["feature_overrides", "paired_inflation", "audit", "main"]

METRICS = [("recall@20", "R@20"), ("ndcg@20", "N@20")]


def feature_overrides(config, suffix: str) -> Dict:
    """Typed overrides that make the run read its user features from ``<dataset>.<suffix>``
    instead of the user feature file of ``config`` (a RecBole ``Config``)."""
    field = config["user_feature_field"] or "uid"
    suffixes = list(config["additional_feat_suffix"] or [])
    load_col = dict(config["load_col"] or {})
    users = [s for s in suffixes if field in (load_col.get(s) or [])]
    if len(users) != 1:
        raise ValueError(f"the dataset config must load exactly one user feature file (an "
                         f"`additional_feat_suffix` whose `load_col` has `{field}`); found {users or 'none'} "
                         f"in additional_feat_suffix={suffixes}")
    old = users[0]
    columns = load_col.pop(old)
    load_col[suffix] = columns
    return {"additional_feat_suffix": [suffix if s == old else s for s in suffixes], "load_col": load_col}


def paired_inflation(clean: Sequence[float], leaky: Sequence[float]) -> Dict:
    """``{"diff": mean, "sd", "ci": (low, high), "p", "n", "relative"}`` of leaky − clean,
    paired by position; the CI and p are ``nan`` for fewer than two pairs."""
    from scipy import stats

    if len(clean) != len(leaky) or not clean:
        raise ValueError(f"need as many clean as leaky scores (>= 1), got {len(clean)} and {len(leaky)}")
    d = [float(b) - float(a) for a, b in zip(clean, leaky)]
    n = len(d)
    mean, sd = mean_std(d)
    if n >= 2:
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        ci = (mean - half, mean + half)
        p = float(stats.ttest_rel(leaky, clean).pvalue) if sd > 0 else (0.0 if mean != 0 else 1.0)
    else:
        ci, p = (float("nan"), float("nan")), float("nan")
    base = mean_std(clean)[0]
    return {"diff": mean, "sd": sd, "ci": ci, "p": p, "n": n, "relative": mean / base if base else float("nan")}


def _pm(ms: Tuple[float, float]) -> str:
    mean, std = ms
    return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"


def markdown_table(name: str, dataset: str, clean_suffix: str, leaky_suffix: str, seeds: List[int],
                   clean: List[Dict], leaky: List[Dict]) -> Tuple[str, Dict]:
    """The audit's table and its numbers (``{metric: paired_inflation(...)}``)."""
    stats = {}
    head = "| User features | " + " | ".join(h for _, h in METRICS) + " |"
    lines = [f"# {dataset}: leakage audit of {name} ({len(seeds)} seed(s), paired by seed)", "",
             f"Test scores, mean ± sample std over seeds {seeds}. CLEAN user features: "
             f"`{clean_suffix}` (texts from training interactions only). LEAKY: `{leaky_suffix}` "
             f"(texts from ALL of the user's interactions, valid/test included, as the paper's "
             f"scripts build them; for measuring only). Inflation = LEAKY − CLEAN with its 95% CI "
             f"(paired t over seeds) and the two-sided paired t-test p-value.", "",
             head, "|---|" + "---:|" * len(METRICS)]
    row_c = [_pm(mean_std([r["test_result"][m] for r in clean])) for m, _ in METRICS]
    row_l = [_pm(mean_std([r["test_result"][m] for r in leaky])) for m, _ in METRICS]
    infl, rel, pv = [], [], []
    for m, _ in METRICS:
        s = paired_inflation([r["test_result"][m] for r in clean], [r["test_result"][m] for r in leaky])
        stats[m] = s
        ci = "" if s["ci"][0] != s["ci"][0] else f" [{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]"
        infl.append(f"{s['diff']:+.4f}{ci}")
        rel.append(f"{100 * s['relative']:+.1f}%")
        pv.append("n/a (1 seed)" if s["p"] != s["p"] else f"{s['p']:.3g}")
    lines += [f"| CLEAN (`{clean_suffix}`) | " + " | ".join(row_c) + " |",
              f"| LEAKY (`{leaky_suffix}`) | " + " | ".join(row_l) + " |",
              "| inflation, LEAKY − CLEAN [95% CI] | " + " | ".join(infl) + " |",
              "| relative inflation | " + " | ".join(rel) + " |",
              "| paired t-test p | " + " | ".join(pv) + " |", "",
              "Per seed (test " + ", ".join(h for _, h in METRICS) + "; best epoch):", "",
              "| seed | CLEAN | LEAKY |", "|---:|---|---|"]
    for s, c, lk in zip(seeds, clean, leaky):
        cell = lambda r: " / ".join(f"{r['test_result'][m]:.4f}" for m, _ in METRICS) + f"; {r['best_epoch']}"  # noqa
        lines.append(f"| {s} | {cell(c)} | {cell(lk)} |")
    return "\n".join(lines) + "\n", stats


def audit(dataset: str, config_files: Optional[List[str]], clean_suffix: str, leaky_suffix: str,
          seeds: Sequence[int], out: str, model: str = "MLLMRec", fixed: Optional[Dict] = None,
          jobs: int = 0) -> Dict:
    """Trains ``model`` with the clean and the leaky user features for every seed
    (resumably), writes ``<out>.md`` / ``<out>.json``; returns ``{"table", "stats", ...}``.

    Args:
        dataset, config_files: the dataset and its YAML (which loads one user feature file).
        clean_suffix, leaky_suffix: the two user feature files' suffixes.
        seeds: distinct ints; one clean and one leaky run each.
        out: output path without extension; the store is ``<out>.store/``.
        model: a model reading user features through ``user_feature_field``.
        fixed: typed overrides for every run.
        jobs: as for :func:`recbole_models.sweep.run_points`.
    """
    from recbole_models.run import make_config

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {list(seeds)}")
    if clean_suffix == leaky_suffix:
        raise ValueError(f"--clean and --leaky name the same feature file suffix {clean_suffix!r}")
    if "leaky" not in leaky_suffix or "leaky" in clean_suffix:
        raise ValueError(f"the leaky suffix must say leaky and the clean one must not "
                         f"(got clean {clean_suffix!r}, leaky {leaky_suffix!r})")
    fixed = check_typed(dict(fixed or {}), "--set")
    with no_command_line():
        config = make_config(model, dataset, config_files, dict(fixed))
    data_dir = config["data_path"]
    for suffix in (clean_suffix, leaky_suffix):
        path = os.path.join(data_dir, f"{dataset}.{suffix}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such feature file (write it with `python -m mllmrec_pyg encode`, "
                                    f"see docs/experiments.md)")
    arms = {"CLEAN": feature_overrides(config, clean_suffix), "LEAKY": feature_overrides(config, leaky_suffix)}
    points = [Point(f"{model} ({arm} user features)", model, dict(fixed, **over), s)
              for s in seeds for arm, over in arms.items()]
    total = len(points)
    count = [0]

    def report(record, trained):
        count[0] += 1
        r = record["test_result"]
        print(f"[{count[0]}/{total}] {'trained' if trained else 'from store'}: {record['name']} seed "
              f"{record['seed']}: test R@20 {r.get('recall@20', float('nan')):.4f}", flush=True)

    records = run_points(points, dataset, config_files, out + ".store", jobs=jobs, on_record=report)
    clean, leaky = records[0::2], records[1::2]
    table, stats = markdown_table(model, dataset, clean_suffix, leaky_suffix, seeds, clean, leaky)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write(table)
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump({"model": model, "dataset": dataset, "clean": clean_suffix, "leaky": leaky_suffix,
                   "seeds": seeds, "inflation": stats,
                   "runs": {"CLEAN": clean, "LEAKY": leaky}}, f, indent=1, default=float)
    return {"table": table, "stats": stats, "clean": clean, "leaky": leaky}


def main(argv=None) -> int:
    from recbole_models.grid import _parse_pairs

    parser = argparse.ArgumentParser(prog="python -m recbole_models.leakage", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", nargs="*", default=None, help="YAML config files of every run")
    parser.add_argument("--model", "-m", default="MLLMRec")
    parser.add_argument("--clean", default="useremb_history",
                        help="suffix of the CLEAN user feature file (default useremb_history)")
    parser.add_argument("--leaky", default="useremb_history_leaky",
                        help="suffix of the LEAKY user feature file (default useremb_history_leaky)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024, 2025, 2026, 2027, 2028],
                        help="seeds, one clean and one leaky run each (default 2024..2028)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a typed override for every run (e.g. --set epochs=200)")
    parser.add_argument("--out", default=None, help="output path without extension "
                                                    "(default results/leakage/<dataset>-<leaky suffix>)")
    parser.add_argument("--jobs", "-j", type=int, default=0,
                        help="runs at once, each in its own process (default 0: in this process)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("results", "leakage", f"{args.dataset}-{args.leaky}")
    print(f"WARNING: the {args.leaky!r} runs use LEAKY user features (validation/test interactions); "
          f"their scores measure leakage and are never a result.", file=sys.stderr)
    try:
        if args.jobs < 0:
            raise ValueError(f"--jobs must be >= 0, got {args.jobs}")
        result = audit(args.dataset, args.config_files, args.clean, args.leaky, args.seeds, out, args.model,
                       _parse_pairs(args.set, "--set", lists=False), args.jobs)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(result["table"])
    print(f"written: {out}.md, {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
