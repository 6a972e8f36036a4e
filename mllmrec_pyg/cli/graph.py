"""``mllmrec graph``: build a dataset's refined item-item graph and print its statistics."""
import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "graph", help="build the item-item graph of a dataset and print its statistics",
        description="Semantic k-NN graph (threshold-denoised) from item features + Jaccard "
                    "co-occurrence graph from TRAINING interactions, merged and normalised.")
    p.add_argument("dataset_dir", help="dataset directory (<name>.item, <name>.train.inter or <name>.inter)")
    p.add_argument("--name", default=None, help="dataset name (default: the directory's name)")
    p.add_argument("--features", default="itememb",
                   help="suffix of the item feature file; encoded from the .item texts when missing")
    p.add_argument("--k", type=int, default=10, help="semantic neighbours per item")
    p.add_argument("--threshold", type=float, default=0.7, help="similarity threshold (epsilon)")
    p.add_argument("--no-threshold", action="store_true", help="plain k-NN")
    p.add_argument("--cooc-k", type=int, default=10, help="co-occurrence neighbours per item (0: none)")
    p.add_argument("--save", default=None, help="write the graph (torch_geometric Data) to this .pt file")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from torch_geometric.data import Data
    from torch_geometric.transforms import Compose

    from mllmrec_pyg.graph_stats import format_statistics, graph_statistics
    from mllmrec_pyg.text.item_text import read_atomic
    from mllmrec_pyg.transforms import JaccardCooccurrence, ThresholdKNN, Union

    directory = args.dataset_dir
    name = args.name or os.path.basename(os.path.normpath(directory))
    train = os.path.join(directory, f"{name}.train.inter")
    if not os.path.isfile(train):
        train = os.path.join(directory, f"{name}.inter")
        print(f"note: no {name}.train.inter; co-occurrence from all of {train}")
    feat_file = os.path.join(directory, f"{name}.{args.features}")
    if os.path.isfile(feat_file):
        from mllmrec_pyg.datasets.mmrec import read_feature_file

        tokens, values = read_feature_file(feat_file)  # an id on two rows is an error
        x = torch.from_numpy(values)
    else:
        from mllmrec_pyg.text.encoder import encode_texts
        from mllmrec_pyg.text.item_text import item_texts

        print(f"no {feat_file}: encoding the item texts of {name}.item with MiniLM")
        texts = item_texts(os.path.join(directory, f"{name}.item"))
        tokens = list(texts)
        x = torch.from_numpy(encode_texts([texts[t] for t in tokens], show_progress=False))
    index = {t: i for i, t in enumerate(tokens)}
    inter = read_atomic(train)
    unknown = sorted(set(inter["item_id"]) - set(index))
    if unknown:
        raise ValueError(f"{train}: items without features: {unknown[:5]} ({len(unknown)} in all)")
    users = {u: i for i, u in enumerate(dict.fromkeys(inter["user_id"]))}
    ui = torch.tensor([[users[u] for u in inter["user_id"]], [index[i] for i in inter["item_id"]]])

    steps = [ThresholdKNN(k=args.k, threshold=None if args.no_threshold else args.threshold)]
    if args.cooc_k > 0:
        steps.append(JaccardCooccurrence(k=args.cooc_k))
    steps.append(Union())
    graph = Compose(steps)(Data(x=x, inter_index=ui, num_users=len(users), num_items=len(tokens)))
    print(f"{name}: {len(tokens):,} items, {len(users):,} users, {ui.size(1):,} training interactions, "
          f"features {tuple(x.shape)}")
    print(format_statistics(graph_statistics(graph)))
    if args.save:
        graph.item_tokens = tokens
        torch.save(graph, args.save)
        print(f"saved: {args.save}")
    return 0
