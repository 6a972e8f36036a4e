"""``mllmrec demo``: the whole method on the embedded MovieLens-100k, on CPU.

Stages (each skips what is already done):

1. the pre-split data in ``data/ml-100k`` (RecBole RS 8:1:1 per user, seed 2024);
2. the refined item-item graph from item texts (title, year, genres) and TRAINING
   interactions, with its statistics;
3. user preference texts: the shipped Gemma 3 270M texts (``--regenerate`` runs
   the LLM stage again);
4. MiniLM features: items, users from preference texts, users from their
   training history (the no-LLM baseline);
5. RecBole runs under one protocol (data/ml-100k.yaml: the same split, evaluator,
   seed, early stopping and epoch limit for every row); a Markdown table and a PNG
   plot. By default the quick runs of :data:`RUNS` (MLLMRec, its no-LLM variant,
   BPR and the multimodal baselines VBPR and FREEDOM: a first look in about 12
   minutes from a fresh clone on 2 cores, install included); ``--full`` runs them
   all (ablations, LightGCN, +UI-GCN); ``--runs`` names any.
"""
import json
import os
import sys

# The demo's runs, one line each, in table order: (name, in the quick default). A name
# is a model (ours or RecBole's) or a variant of data/ml-100k.variants.yaml /
# recbole_models/yaml/variants.yaml. Every run shares the protocol of data/ml-100k.yaml,
# so the quick table's rows are the full table's rows.
RUNS = [
    ("MLLMRec", True),
    ("MLLMRec (history text)", True),
    ("MLLMRec w/o RS", False),
    ("MLLMRec w/o GD", False),
    ("MLLMRec w/o TE", False),
    ("MLLMRec w/o GCN", False),
    ("MLLMRec +UI-GCN", False),
    ("BPR", True),
    ("VBPR", True),
    ("FREEDOM", True),
    ("LightGCN", False),
]
QUICK_RUNS = [name for name, quick in RUNS if quick]
FULL_RUNS = [name for name, _ in RUNS]
# Runs that take ~4x the others (FREEDOM: 451 s of the quick demo's 14 min when it
# started third); started first, so that with --jobs 2 they do not end up running
# after everything else has finished.
SLOW_RUNS = ("FREEDOM", "LightGCN", "MLLMRec +UI-GCN", "MLLMRec (history text)")
PREFERENCES = "ml-100k.preferences.gemma3-270m.jsonl"


def _usable_cpus() -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the whole pipeline on the embedded MovieLens-100k",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data", help="directory holding ml-100k/ and ml-100k.yaml")
    p.add_argument("--out", default=os.path.join("results", "demo"), help="table, JSON and plot go here")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--full", action="store_true",
                       help=f"all runs: {', '.join(FULL_RUNS)} (about half an hour on 2 cores)")
    which.add_argument("--runs", nargs="+", default=None, metavar="NAME",
                       help=f"models and variants to compare (default, the quick runs: {', '.join(QUICK_RUNS)})")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every run with N seeds (the YAML's seed, +1, ...): the table gives mean ± std "
                        "and the bar chart error bars (default 1: a smoke run, no error bars)")
    p.add_argument("--regenerate", action="store_true",
                   help="regenerate the preference texts with the LLM stage (Gemma 3 270M, slow on CPU)")
    p.add_argument("--graph-only", action="store_true", help="stop after the graph statistics")
    p.add_argument("--jobs", type=int, default=min(4, _usable_cpus()),
                   help="RecBole runs at once, each in its own process with one torch thread; the "
                        "table does not depend on it (default: the CPU count, at most 4)")
    p.add_argument("--verbose", action="store_true",
                   help="show RecBole's per-epoch log (state INFO; default WARNING)")
    p.set_defaults(func=run)


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def protocol(config_file: str) -> str:
    """One sentence stating the protocol every row of the table shares, from the YAML."""
    import yaml

    with open(config_file, encoding="utf-8") as f:
        c = yaml.safe_load(f)
    return (f"One protocol for every row ({config_file}): the shipped per-user RS 8:1:1 split, full "
            f"ranking over all items with training items masked, model chosen on valid "
            f"{c.get('valid_metric', 'Recall@20')} with early stopping after {c.get('stopping_step', 10)} "
            f"epochs without gain, at most {c.get('epochs', 300)} epochs, seed {c.get('seed', 2020)}; "
            f"test scores.")


def plot(results, path: str) -> None:
    """Bar chart of test Recall@20 and NDCG@20 per name: the mean over the name's seeds,
    with ± one standard deviation (ddof 1) as error bars when it has several
    (:func:`recbole_models.figures.bars.bar_chart`)."""
    from recbole_models.figures.bars import bar_chart

    bar_chart(results, path, "MovieLens-100k, RecBole protocol, training-only user histories")


def run(args) -> int:
    from mllmrec_pyg.text.encoder import encode_dataset

    if args.jobs < 1:  # checked before minutes of encoding, not at stage 5
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    runs = FULL_RUNS if args.full else (args.runs or QUICK_RUNS)
    data_dir = os.path.join(args.data, "ml-100k")
    config_file = os.path.join(args.data, "ml-100k.yaml")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: run the demo from the repository root or pass --data")

    _banner("1. MovieLens-100k, pre-split (training split only reaches the LLM and the graph)")
    if not os.path.isfile(os.path.join(data_dir, "split.json")):
        from mllmrec_pyg.datasets.movielens import prepare_movielens

        prepare_movielens(data_dir)
    with open(os.path.join(data_dir, "split.json"), encoding="utf-8") as f:
        split = json.load(f)
    print(f"{split['users']} users, {split['items']} items, interactions {split['interactions']}, "
          f"seed {split['seed']}")

    _banner("2. item features (MiniLM on title + year + genres) and the refined item-item graph")
    encode_dataset(data_dir, user_texts=None, show_progress=False)
    from mllmrec_pyg.cli import main as cli_main

    cli_main(["graph", data_dir])
    if args.graph_only:
        return 0

    _banner("3. user preference texts (LLM reasoning over TRAINING histories)")
    prefs = os.path.join(data_dir, PREFERENCES)
    if args.regenerate or not os.path.isfile(prefs):
        if not args.regenerate:
            print(f"{prefs} is missing: generating it (this is the slow LLM stage)")
        argv = ["pipeline", "--config", os.path.join(data_dir, "preferences.pipeline.yaml")]
        # Without --regenerate the pipeline would only reuse the texts already in its store.
        code = cli_main(argv + (["--regenerate"] if args.regenerate else []))
        if code:
            return code
    manifest = os.path.join(data_dir, "preferences.manifest.json")
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            info = json.load(f)
        print("shipped texts: " + ", ".join(f"{k}={info[k]}" for k in ("model", "template_hash", "users", "date")
                                            if k in info))

    _banner("4. user features: preference texts (useremb) and training-history texts (useremb_history)")
    encode_dataset(data_dir, user_texts=prefs, show_progress=False)
    encode_dataset(data_dir, user_texts="history", user_suffix="useremb_history", show_progress=False)

    _banner(f"5. RecBole runs: {', '.join(runs)} (one protocol for all; {args.jobs} at a time)"
            + ("" if args.full or args.runs else "; --full adds the ablations and LightGCN"))
    from recbole_models.compare import compare, load_variants, markdown_table, write_atomic

    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    variants = load_variants([os.path.join(args.data, "ml-100k.variants.yaml")])

    seeds = None
    if args.seeds > 1:
        import yaml

        with open(config_file, encoding="utf-8") as f:
            first = int(yaml.safe_load(f).get("seed", 2020))
        seeds = list(range(first, first + args.seeds))

    def report(result):
        test = ", ".join(f"{k} {v:.4f}" for k, v in result["test_result"].items())
        seed = "" if result.get("seed") is None else f" (seed {result['seed']})"
        print(f"-- {result['name']}{seed}: test {test}; best epoch {result['best_epoch']}; "
              f"{result['train_time']:.0f} s", flush=True)

    # Every run in its own process with one thread, whatever --jobs is: the table
    # is then the same on one core or four.
    order = sorted(runs, key=lambda name: name not in SLOW_RUNS)  # stable: slow ones first
    done = compare(order, "ml-100k", [config_file], variants=variants, jobs=args.jobs,
                   config_dict=None if args.verbose else {"state": "WARNING"}, on_result=report,
                   seeds=seeds)
    results = [r for name in runs for r in done if r["name"] == name]
    table = markdown_table(results, baseline="MLLMRec" if seeds and "MLLMRec" in runs else None)
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "ml-100k.md")
    write_atomic(md, "# MovieLens-100k demo: test results\n\n" + protocol(config_file) + "\n\n" + table + "\n")
    write_atomic(os.path.join(args.out, "ml-100k.json"), json.dumps(
        [{k: v for k, v in r.items() if k != "saved_model_file"} for r in results], indent=2, default=float))
    png = os.path.join(args.out, "ml-100k.png")
    plot(results, png)
    _banner("results")
    print(table)
    print(f"\nwritten: {md}, {png}")
    return 0
