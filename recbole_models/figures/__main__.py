"""``python -m recbole_models.figures {edge-hist,tsne} ...``: the paper's figures as commands.

::

    python -m recbole_models.figures edge-hist --dataset-dir data/ml-100k --k 10 --threshold 0.7 \\
        --out results/figures/ml-100k-edge-hist.png
    python -m recbole_models.figures tsne --config_files data/ml-100k.yaml \\
        --checkpoint saved/MLLMRec-....pth saved/LightGCN-....pth saved/BPR-....pth \\
        --out results/figures/ml-100k-tsne.png
"""
import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_models.figures", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("edge-hist", help="similarity histogram of the plain vs thresholded k-NN graph (Fig. 1b)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset-dir", help="dataset directory; reads <name>.<suffix>")
    src.add_argument("--features", help="a RecBole item feature file")
    e.add_argument("--name", help="dataset name (default: the directory's name)")
    e.add_argument("--suffix", default="itememb", help="item feature file suffix (default itememb)")
    e.add_argument("--k", type=int, default=10, help="neighbours per item, the item itself included (default 10)")
    e.add_argument("--threshold", type=float, default=0.7, help="epsilon of the thresholded graph (default 0.7)")
    e.add_argument("--below", type=float, default=0.5, help="similarity of a 'weak' edge (default 0.5, the paper's)")
    e.add_argument("--include-self", action="store_true", help="count the self-loops too")
    e.add_argument("--out", default=None, help="PNG (default results/figures/<name>-edge-hist.png)")

    t = sub.add_parser("tsne", help="t-SNE of users' representations + alignment/uniformity")
    t.add_argument("--checkpoint", nargs="+", required=True, help="checkpoints (.pth) of runs on one dataset")
    t.add_argument("--labels", nargs="+", help="panel titles, one per checkpoint")
    t.add_argument("--config_files", nargs="*", default=None, help="the dataset YAML(s) the models used")
    t.add_argument("--users", type=int, default=500, help="users plotted (default 500)")
    t.add_argument("--seed", type=int, default=0, help="draws the users, seeds t-SNE (default 0)")
    t.add_argument("--pairs", choices=["train", "valid", "test"], default="test",
                   help="split whose interactions are the positives of `align` (default test)")
    t.add_argument("--out", default=os.path.join("results", "figures", "tsne.png"), help="PNG")
    args = parser.parse_args(argv)
    try:
        if args.command == "edge-hist":
            from recbole_models.figures.edge_hist import edge_histogram

            if args.dataset_dir:
                name = args.name or os.path.basename(os.path.normpath(args.dataset_dir))
                features = os.path.join(args.dataset_dir, f"{name}.{args.suffix}")
            else:
                features, name = args.features, os.path.basename(args.features).split(".")[0]
            if not os.path.isfile(features):
                raise FileNotFoundError(f"{features}: no such feature file (write it with "
                                        f"`python -m mllmrec_pyg encode`)")
            out = args.out or os.path.join("results", "figures", f"{name}-edge-hist.png")
            stats = edge_histogram(features, args.k, args.threshold, out, args.below, args.include_self)
            print(f"{'graph':<28} {'edges':>9} {'share < ' + str(args.below):>12} {'mean sim':>9}")
            for key, label in (("plain", f"plain k-NN (k={args.k})"),
                               ("thresholded", f"thresholded (eps={args.threshold})")):
                s = stats[key]
                print(f"{label:<28} {s['edges']:>9,} {100 * s['share_below']:>11.1f}% {s['mean']:>9.3f}")
            print(f"edges removed by the threshold: {100 * stats['removed_by_threshold']:.1f}%")
            print(json.dumps(stats))
            print(f"written: {out}")
        else:
            from recbole_models.figures.tsne import tsne_figure

            if args.users < 5:
                raise ValueError(f"--users must be >= 5, got {args.users}")
            results = tsne_figure(args.checkpoint, args.out, args.config_files, args.labels, args.users,
                                  args.seed, args.pairs)
            print(f"| model | align ({args.pairs} pairs) | uniform (users) | uniform (items) |")
            print("|---|---:|---:|---:|")
            for r in results:
                print(f"| {r['label']} | {r['align']:.4f} | {r['uniform_users']:.4f} | {r['uniform_items']:.4f} |")
            print(json.dumps(results))
            print(f"written: {args.out}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
