"""``mllmrec mmrec import|export``: the MMRec data layout (the paper's framework) in and out."""


def register(subparsers) -> None:
    p = subparsers.add_parser("mmrec", help="convert datasets from/to MMRec's layout",
                              description="MMRec layout: <name>.inter (userID itemID rating timestamp "
                                          "x_label) and *_feat.npy row-aligned to the ids (docs/datasets.md).")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    i = sub.add_parser("import", help="MMRec directory -> our pre-split RecBole dataset + feature files")
    i.add_argument("src", help="MMRec dataset directory (<name>.inter, text_feat.npy, ...)")
    i.add_argument("--out", required=True, help="dataset directory to create; its name is the dataset name")
    i.add_argument("--inter-file", default=None, help="the .inter file (default: <src>/<name>.inter or the only one)")
    i.add_argument("--item-features", default=None,
                   choices=("image_text_feat.npy", "text_feat.npy", "image_feat.npy"),
                   help="item features wired into the YAML (default: image_text_feat.npy, else text, else image)")
    i.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    i.set_defaults(func=run_import)

    e = sub.add_parser("export", help="our pre-split dataset + feature files -> MMRec directory")
    e.add_argument("dataset_dir", help="our dataset directory (<name>.train/valid/test.inter, feature files)")
    e.add_argument("--out", required=True, help="MMRec directory to create")
    e.add_argument("--name", default=None, help="dataset name (default: dataset_dir's name)")
    e.add_argument("--feature", action="append", default=None, metavar="SUFFIX=FILE.npy",
                   help="feature file to export and its .npy name, repeatable (default: itememb/imagetextemb "
                        "-> image_text_feat.npy, textemb -> text_feat.npy, imageemb -> image_feat.npy, "
                        "useremb -> user_preferences_feat.npy)")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    e.set_defaults(func=run_export)


def run_import(args) -> int:
    import logging

    from mllmrec_pyg.datasets.mmrec import import_mmrec

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    s = import_mmrec(args.src, args.out, inter_file=args.inter_file, item_features=args.item_features,
                     overwrite=args.overwrite)
    split = s["split"]
    print(f"dataset {s['dataset']}: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} "
          f"interactions, density {s['density']:.6f}; train {split['train']:,} / valid {split['valid']:,} / "
          f"test {split['test']:,}")
    for fname, info in s["features"].items():
        print(f"  {fname} {tuple(info['shape'])} -> .{info['suffix']}{' (wired in the YAML)' if info['wired'] else ''}")
    return 0


def run_export(args) -> int:
    from mllmrec_pyg.datasets.mmrec import export_mmrec

    files = None
    if args.feature:
        files = {}
        for spec in args.feature:
            suffix, sep, target = spec.partition("=")
            if not sep or not suffix or not target.endswith(".npy"):
                raise ValueError(f"--feature {spec!r}: expected SUFFIX=FILE.npy")
            files[suffix] = target
    s = export_mmrec(args.dataset_dir, args.out, name=args.name, files=files, overwrite=args.overwrite)
    print(f"MMRec dataset {s['dataset']}: {s['users']:,} users, {s['items']:,} items, "
          f"{s['interactions']:,} interactions; ids: users {s['ids']['users']}, items {s['ids']['items']}")
    for fname, shape in s["features"].items():
        print(f"  {fname} {tuple(shape)}")
    print(f"wrote {args.out}/ (mmrec_dataset.yaml: MMRec's dataset config)")
    return 0
