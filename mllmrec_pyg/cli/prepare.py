"""``mllmrec prepare``: raw datasets → pre-split RecBole datasets.

::

    mllmrec prepare amazon --reviews reviews_Baby_5.json.gz --meta meta_Baby.json.gz --out data/baby
    mllmrec prepare movielens --out data/ml-100k
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="prepare a dataset (Amazon reviews, MovieLens-100k)",
                              description="Writes a pre-split RecBole dataset directory (docs/datasets.md).")
    sub = p.add_subparsers(dest="source", metavar="SOURCE")
    sub.required = True

    a = sub.add_parser("amazon", help="Amazon 2014 reviews (+ metadata) → k-core, split RecBole files",
                       description="Reads reviews (JSON lines or ratings CSV, plain or gzip) and metadata "
                                   "(Python-literal lines), applies the iterated k-core, re-indexes, splits "
                                   "and writes <out>/<name>.{inter,train.inter,valid.inter,test.inter,item,yaml}.")
    a.add_argument("--reviews", required=True, help="reviews_<Cat>_5.json[.gz] or ratings_<Cat>.csv[.gz]")
    a.add_argument("--meta", default=None, help="meta_<Cat>.json[.gz] (optional; gives the .item text fields)")
    a.add_argument("--out", required=True, help="dataset directory to create; its name is the dataset name")
    a.add_argument("--k-core", type=int, default=5, help="minimum interactions per user and item (default 5)")
    a.add_argument("--split", choices=("mmrec", "ratio"), default="mmrec",
                   help="mmrec: per-user shuffle, (n-2,1,1) below 10 items else 80/10/10 (default); "
                        "ratio: RecBole's per-user ratio split (--ratios, --order)")
    a.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VALID", "TEST"),
                   help="ratios of --split ratio (default 0.8 0.1 0.1)")
    a.add_argument("--order", choices=("RO", "TO"), default="RO",
                   help="--split ratio order: RO random (default) or TO by time")
    a.add_argument("--seed", type=int, default=2024, help="seed of the split's shuffle (default 2024)")
    a.add_argument("--images", default=None, metavar="DIR",
                   help="also download the item images (imUrl) into DIR as <item>.jpg and record them in the "
                        ".item file's `image` column (off by default; resumable: `mllmrec download-images`)")
    a.add_argument("--image-workers", type=int, default=8, help="concurrent image downloads (default 8)")
    a.add_argument("--overwrite", action="store_true",
                   help="replace an --out directory that holds an earlier prepared dataset")
    a.set_defaults(func=run_amazon)

    m = sub.add_parser("movielens", help="MovieLens-100k from the recbole wheel, split RS 8:1:1",
                       description="Splits the MovieLens-100k copy inside the recbole wheel per user with "
                                   "RecBole's RS 8:1:1 random-order splitter.")
    m.add_argument("--out", default="data/ml-100k", help="dataset directory (default data/ml-100k)")
    m.add_argument("--seed", type=int, default=2024, help="RecBole seed of the split (default 2024)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing split")
    m.set_defaults(func=run_movielens)


def _print_summary(summary: dict) -> None:
    split = summary["split"]
    print(f"dataset {summary['dataset']}: {summary['users']:,} users, {summary['items']:,} items, "
          f"{summary['interactions']:,} interactions, density {summary['density']:.6f} "
          f"({summary['density'] * 100:.4f}%)")
    print(f"split ({split['method']}): train {split['train']:,} / valid {split['valid']:,} / "
          f"test {split['test']:,}")


def run_amazon(args) -> int:
    import logging
    import os

    from mllmrec_pyg.datasets.amazon import prepare_amazon

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.k_core < 0:
        raise ValueError(f"--k-core must be >= 0, got {args.k_core}")
    if args.image_workers < 1:
        raise ValueError(f"--image-workers must be >= 1, got {args.image_workers}")
    summary = prepare_amazon(args.reviews, args.out, meta=args.meta, k=args.k_core, split=args.split,
                             seed=args.seed, ratios=tuple(args.ratios), order=args.order,
                             overwrite=args.overwrite)
    print(f"k-core {summary['k_core']}: {summary['reviews_read']:,} reviews read, "
          f"{summary['duplicates_collapsed']:,} duplicate pairs collapsed, "
          f"{summary['k_core_rounds']} filtering round(s)")
    _print_summary(summary)
    if summary["items_without_meta"]:
        print(f"items without metadata: {summary['items_without_meta']:,}")
    name = summary["dataset"]
    print(f"wrote {args.out}/ ({name}.yaml for RecBole, {name}.mllmrec.yaml once features are encoded)")
    if args.images:
        from mllmrec_pyg.datasets.images import download_dataset_images

        report = download_dataset_images(args.out, image_dir=args.images, workers=args.image_workers)
        print(f"images: {report.summary()} -> {os.path.abspath(args.images)}")
    return 0


def run_movielens(args) -> int:
    from mllmrec_pyg.datasets.movielens import prepare_movielens

    try:
        summary = prepare_movielens(args.out, seed=args.seed, overwrite=args.overwrite)
    except FileExistsError as err:  # the command reports ValueErrors as bad input, without a traceback
        raise ValueError(f"{err} (--overwrite replaces it)") from None
    counts = summary.get("interactions", {})
    total = sum(counts.values()) if isinstance(counts, dict) else counts
    print(f"dataset {summary.get('dataset', 'ml-100k')}: {summary.get('users')} users, "
          f"{summary.get('items')} items, {total} interactions; split {counts} -> {args.out}")
    return 0
