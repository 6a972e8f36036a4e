"""Train several models on one dataset under the same protocol and tabulate them.

::

    python -m recbole_models.compare --models MLLMRec BPR LightGCN "MLLMRec w/o RS" \\
        --dataset ml-100k --config_files data/ml-100k.yaml --out results/ml-100k.md

A name is one of ours, any RecBole model, or a *variant*: a named model plus
config overrides from ``recbole_models/yaml/variants.yaml`` (the paper's
ablations) or a ``--variants`` YAML file. Each run is a full
:func:`recbole_models.run.run_recbole` (same data files, split, evaluator and
seed); the table has test Recall/NDCG@10,20, the best epoch (the validation
early-stopping choice) and training time, and is written to ``--out`` and stdout.
``--key=value`` overrides apply to every run.

``--jobs K`` trains each name in its own fresh process, ``K`` at a time, each with
one torch thread. The scores then do not depend on ``K``; they may differ in the
last digits from an in-process run (``--jobs 0``), whose thread count changes the
summation order. How much sooner it finishes depends on how much each model gains
from a second thread (figures in ``docs/recbole.md``); training times are measured
while the other runs share the machine.
"""
import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

import yaml

from recbole_models import get_model
from recbole_models.run import add_common_arguments, run_recbole

_DEFAULT_VARIANTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yaml", "variants.yaml")
METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]
HEADERS = ["R@10", "R@20", "N@10", "N@20"]


def load_variants(paths: Optional[List[str]] = None) -> Dict[str, dict]:
    """``{name: {"model": ..., **overrides}}`` from the default file and ``paths`` (later wins)."""
    variants: Dict[str, dict] = {}
    for path in [_DEFAULT_VARIANTS] + list(paths or []):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of run names to settings")
        for name, spec in data.items():
            if not isinstance(spec, dict) or "model" not in spec:
                raise ValueError(f"{path}: variant {name!r} needs a `model` key")
            variants[str(name)] = dict(spec)
    return variants


def resolve(name: str, variants: Dict[str, dict]):
    """``(model, overrides)`` for a run name."""
    if name in variants:
        spec = dict(variants[name])
        return spec.pop("model"), spec
    return name, {}


def markdown_table(results: List[Dict]) -> str:
    lines = ["| Model | " + " | ".join(HEADERS) + " | Best epoch | Train time (s) |",
             "|---|" + "---:|" * (len(HEADERS) + 2)]
    for r in results:
        cells = [f"{r['test_result'].get(m, float('nan')):.4f}" for m in METRICS]
        lines.append(f"| {r['name']} | " + " | ".join(cells)
                     + f" | {r['best_epoch']} | {r['train_time']:.1f} |")
    return "\n".join(lines)


def _run_in_worker(task) -> Tuple[int, Dict]:
    i, name, model, dataset, config_file_list, config_dict, saved = task
    import torch

    torch.set_num_threads(1)
    try:
        result = run_recbole(model, dataset, config_file_list, config_dict, saved=saved)
    except Exception as err:
        # The pool re-raises this in the caller, which would not know which run it was.
        raise RuntimeError(f"run {name!r} ({model}) failed: {type(err).__name__}: {err}") from err
    result["name"] = name
    return i, result


def compare(names: List[str], dataset: str, config_file_list=None, config_dict=None,
            variants: Optional[Dict[str, dict]] = None, saved: bool = True, jobs: int = 0,
            on_result: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Trains and tests every name; returns their results in the order of ``names``
    (each RecBole result dict with ``name``, ``best_epoch`` and ``train_time``).

    Args:
        names: model or variant names (see :func:`resolve`).
        dataset, config_file_list, config_dict: as for :func:`recbole_models.run.run_recbole`;
            ``config_dict`` applies to every run, a variant's overrides on top of it.
        variants: ``{name: {"model": ..., **overrides}}``; default :func:`load_variants`.
        saved: keep the best checkpoint (and test it) as RecBole does.
        jobs: ``0`` runs the names one after another in this process with torch's
            thread settings; ``K >= 1`` runs each in a fresh spawned process, ``K`` at a
            time, with one torch thread each (the scores do not depend on ``K``).
        on_result: called with each result as soon as its run finishes.
    """
    if not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be an integer >= 0, got {jobs!r}")
    variants = load_variants() if variants is None else variants
    runs = [(name, *resolve(name, variants)) for name in names]
    for _, model, _ in runs:
        get_model(model)  # a misspelt last name fails now, not after the other runs
    results: Dict[int, Dict] = {}
    if jobs == 0:
        for i, (name, model, overrides) in enumerate(runs):
            result = run_recbole(model, dataset, config_file_list,
                                 dict(config_dict or {}, **overrides), saved=saved)
            result["name"] = name
            results[i] = result
            if on_result:
                on_result(result)
        return [results[i] for i in range(len(runs))]
    # spawn: a fresh interpreter per run (fork would copy this process's torch
    # threads and RecBole's global logger); one run per process, then it exits.
    # Leaving the `with` terminates the pool: a failed run stops the others at once.
    tasks = [(i, name, model, dataset, config_file_list, dict(config_dict or {}, **overrides), saved)
             for i, (name, model, overrides) in enumerate(runs)]
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        for i, result in pool.imap_unordered(_run_in_worker, tasks):
            results[i] = result
            if on_result:
                on_result(result)
    return [results[i] for i in range(len(runs))]


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".compare-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_models.compare",
                                     description=__doc__.split("\n")[0],
                                     epilog="Other --key=value arguments override config keys in every run.")
    parser.add_argument("--models", "-m", nargs="+", default=["MLLMRec", "BPR", "LightGCN"],
                        help="model or variant names")
    parser.add_argument("--variants", nargs="*", default=None, help="extra variant YAML files")
    parser.add_argument("--out", default=None, help="Markdown file for the table (default results/<dataset>.md)")
    parser.add_argument("--jobs", "-j", type=int, default=0,
                        help="runs at once, each in its own process with one torch thread "
                             "(default 0: one after another in this process)")
    add_common_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if args.jobs < 0:
        parser.error(f"argument --jobs: must be >= 0, got {args.jobs}")
    variants = load_variants(args.variants)
    results = compare(args.models, args.dataset, args.config_files, variants=variants, jobs=args.jobs)
    table = markdown_table(results)
    out = args.out or os.path.join("results", f"{args.dataset}.md")
    write_atomic(out, f"# {args.dataset}: test results (model chosen on valid Recall@20)\n\n{table}\n")
    write_atomic(os.path.splitext(out)[0] + ".json",
                 json.dumps([{k: v for k, v in r.items() if k != "saved_model_file"} for r in results],
                            indent=2, default=float))
    print(table)
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
