"""``mllmrec encode``: item and user texts → RecBole feature files (sentence-transformers)."""
import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "encode", help="encode item/user texts into RecBole feature files",
        description="Encodes a dataset's item descriptions and user texts with a sentence-transformers "
                    "model and writes <name>.<item-suffix> / <name>.<user-suffix> (docs/recbole.md).")
    p.add_argument("dataset_dir", help="dataset directory (holds <name>.item and the .inter files)")
    p.add_argument("--name", default=None, help="dataset name (default: the directory's name)")
    p.add_argument("--item-texts", default=None,
                   help="JSONL of item descriptions {item_id, text} (default: fuse the .item columns)")
    # Required: the user text decides which model is trained (README "Results": the LLM
    # preference row and the no-LLM "history text" row), so it is never chosen silently.
    p.add_argument("--user-texts", required=True, metavar="FILE.jsonl|history|none",
                   help="user texts: a JSONL {user_id, text} (e.g. the LLM preference texts), 'history' "
                        "(the no-LLM baseline: descriptions of the user's TRAINING items; needs "
                        "<name>.train.inter) or 'none' (item features only)")
    p.add_argument("--model", default=None,
                   help="sentence-transformers model path or name (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--item-suffix", default="itememb", help="suffix of the item feature file (default itememb)")
    p.add_argument("--user-suffix", default="useremb",
                   help="suffix of the user feature file (default useremb; data/ml-100k.variants.yaml reads "
                        "the 'history' features from useremb_history)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run)


def run(args) -> int:
    from mllmrec_pyg.text.encoder import encode_dataset

    if not os.path.isdir(args.dataset_dir):
        raise FileNotFoundError(f"{args.dataset_dir}: no such dataset directory")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    written = encode_dataset(args.dataset_dir, args.name, args.item_texts,
                             None if args.user_texts == "none" else args.user_texts, args.model,
                             args.item_suffix, args.user_suffix, args.batch_size)
    for kind, path in written.items():
        print(f"{kind} features: {path}")
    return 0
