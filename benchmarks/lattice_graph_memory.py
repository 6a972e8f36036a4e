"""Memory of LATTICE's graph learning at Amazon-Baby size: the reference's dense
N x N computation against ours (sparse, same values and gradients).

One graph-learning step = project both modalities' features, build the cosine k-NN
graph of each projection, mix them with the softmax modality weights, normalise,
mix with the original graphs, propagate the item embeddings once, backward. This is
what LATTICE does at the first batch of every epoch and at every evaluation.

- ``dense``: the reference (MMRec ``lattice.py`` + ``utils.build_sim`` /
  ``build_knn_neighbourhood`` / ``compute_normalized_laplacian``): dense similarity,
  dense top-k scatter, ``diagflat`` normalisation, dense originals (kept resident by
  the reference: 2 N^2 floats, counted in ``resident``).
- ``ours``: :func:`recbole_models.model.lattice.learned_knn_graph` and
  :func:`~recbole_models.model.lattice.mix_graphs` (block-wise top-k, O(N k) entries).

Each runs in a fresh subprocess; ``peak`` is the growth of the resident set during the
step over the resident set before it (Linux ``clear_refs`` resets the high-water mark).

    python benchmarks/lattice_graph_memory.py [--items 7050] [--k 10]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch.nn import functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DIMS = {"image": 4096, "text": 384}  # MMRec's Baby features: CNN image, MiniLM text


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(field)


def features(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(n // 50, 2), d, generator=gen)
    x = centres[torch.randint(0, centres.size(0), (n,), generator=gen)]
    return (x + 0.3 * torch.rand(n, d, generator=gen)).contiguous()


def dense_knn(sim: torch.Tensor, k: int) -> torch.Tensor:
    values, index = sim.topk(k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, index, values)


def dense_laplacian(adj: torch.Tensor) -> torch.Tensor:
    d = adj.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    m = torch.diagflat(d)
    return m @ adj @ m


def cosine(x: torch.Tensor) -> torch.Tensor:
    x = x / x.norm(dim=-1, keepdim=True)
    return x @ x.t()


def worker(task: str, n: int, k: int, dim: int) -> dict:
    from torch import nn

    from mllmrec_pyg.transforms import normalize_graph, threshold_knn_graph
    from recbole_models.model.lattice import learned_knn_graph, mix_graphs, propagate

    torch.manual_seed(0)
    x = {m: nn.Parameter(features(n, d, i)) for i, (m, d) in enumerate(DIMS.items())}
    proj = {m: nn.Linear(d, dim) for m, d in DIMS.items()}
    w_param = nn.Parameter(torch.full((len(DIMS),), 0.5))
    emb = nn.Parameter(torch.randn(n, 64))
    with torch.no_grad():
        if task == "dense":
            originals = [dense_laplacian(dense_knn(cosine(x[m]), k)) for m in DIMS]
        else:
            originals = []
            for m in DIMS:
                # Row 0 plays RecBole's [PAD] here too: the graph covers rows 1..
                ei, ew = threshold_knn_graph(x[m][1:], k, weighted=True)
                ei, ew = normalize_graph(ei, ew, n - 1, "row")
                originals.append((torch.stack([ei[1], ei[0]]) + 1, ew))
    resident = rss_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = rss_mb("VmRSS")
    start = time.perf_counter()
    w = torch.softmax(w_param, 0)
    if task == "dense":
        learned = sum(w[j] * dense_knn(cosine(proj[m](x[m])), k) for j, m in enumerate(DIMS))
        s = 0.1 * dense_laplacian(learned) + 0.9 * sum(w[j] * o for j, o in enumerate(originals))
        h = s @ emb
    else:
        index, value = mix_graphs([learned_knn_graph(proj[m](x[m]), k) for m in DIMS], originals, w, 0.9, n)
        h = propagate(index, value, emb)
    F.normalize(h, dim=1).sum().backward()
    seconds = time.perf_counter() - start
    return {"task": task, "n": n, "seconds": seconds, "peak_mb": rss_mb("VmHWM") - base,
            "resident_mb": resident, "dense_matrix_mb": n * n * 4 / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=7050)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64, help="feat_embed_dim")
    parser.add_argument("--worker", choices=["dense", "ours"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.items, args.k, args.dim)))
        return
    print(f"LATTICE graph learning, N = {args.items:,} items, k = {args.k}, image {DIMS['image']}-d + "
          f"text {DIMS['text']}-d, one N x N float32 matrix = {args.items ** 2 * 4 / 2**20:,.0f} MiB")
    for task in ("dense", "ours"):
        cmd = [sys.executable, __file__, "--worker", task, "--items", str(args.items), "--k", str(args.k),
               "--dim", str(args.dim)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
        if out.returncode != 0:
            print(f"  {task:<6} FAILED: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {task:<6} step {r['seconds']:6.2f} s   peak +{r['peak_mb']:8.1f} MiB during the step   "
              f"process resident before it {r['resident_mb']:8.1f} MiB")


if __name__ == "__main__":
    main()
