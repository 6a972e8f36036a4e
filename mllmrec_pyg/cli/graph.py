"""``mllmrec graph``: build a dataset's refined item-item graph and print its statistics.

``--save g.pt`` writes the graph's attributes as a plain dict of tensors, numbers and
the list of item tokens, readable without unpickling code::

    from torch_geometric.data import Data
    graph = Data.from_dict(torch.load("g.pt", weights_only=True))
"""
import os
import tempfile


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "graph", help="build the item-item graph of a dataset and print its statistics",
        description="Semantic k-NN graph (threshold-denoised) from item features + Jaccard "
                    "co-occurrence graph from TRAINING interactions, merged and normalised.")
    p.add_argument("dataset_dir", help="dataset directory (<name>.item, <name>.train.inter or <name>.inter)")
    p.add_argument("--name", default=None, help="dataset name (default: the directory's name)")
    p.add_argument("--features", default="itememb",
                   help="suffix of the item feature file; encoded from the .item texts when missing "
                        "(default %(default)s)")
    p.add_argument("--k", type=int, default=10, help="semantic neighbours per item (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.7,
                   help="similarity threshold epsilon (default %(default)s)")
    p.add_argument("--no-threshold", action="store_true",
                   help="plain k-NN: keep every top-k neighbour (default: threshold on)")
    p.add_argument("--cooc-k", type=int, default=10,
                   help="co-occurrence neighbours per item, 0: none (default %(default)s)")
    p.add_argument("--save", default=None,
                   help="write the graph to this .pt file (a dict of tensors and plain values: "
                        "Data.from_dict(torch.load(path, weights_only=True))); default: not saved")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.save:
        from mllmrec_pyg.errors import InputError

        # Checked before the graph is built: minutes of work must not end in an unwritable path.
        if os.path.isdir(args.save):
            raise InputError(args.save, "--save names a directory; give a file name such as graph.pt")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.save))):
            raise InputError(args.save, "--save: its directory does not exist")
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
        from mllmrec_pyg.feature_file import read_feature_file

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
        graph.item_tokens = [str(t) for t in tokens]
        save_graph(graph, args.save)
        print(f"saved: {args.save}")
    return 0


def save_graph(graph, path: str) -> None:
    """Writes ``graph.to_dict()`` (tensors, numbers, strings and lists of them, so it loads
    with ``torch.load(path, weights_only=True)``) atomically: into a temporary file next
    to ``path``, renamed over it once complete, so a crash never leaves a torn file."""
    import torch

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(graph.to_dict(), f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
