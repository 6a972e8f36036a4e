"""Speed and memory of the item-item graph build, against the dense reference.

Prints, in one run:

1. N = 20,000 items, d = 384: our semantic graph (``threshold_knn_graph`` + the
   reference normalisation) against ``mllmrec_pyg.testing.reference`` (dense
   similarity, dense top-k scatter, dense diagonal-matrix normalisation), and one
   bare N x N x d matrix product, the cost no exact method avoids.
2. N = 100,000 on CPU: ours only (the dense path needs > 40 GB).
3. N = 1,000,000 on CUDA when a GPU exists (``--device cuda``).
4. The Jaccard co-occurrence graph on synthetic long-tail interactions at
   Amazon-Clothing size (39,387 users, 23,033 items, 278,677 interactions) and 10x.

Each measurement runs in a fresh subprocess, so its peak resident memory
(``ru_maxrss`` minus the resident size before the measured step) is its own; the
whole process's peak RSS (interpreter, torch, the input features) is printed too.

    python benchmarks/graph_build.py                # everything that fits this machine
    python benchmarks/graph_build.py --only 1 4     # some sections
    python benchmarks/graph_build.py --device cuda --only 3
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

CLOTHING = dict(users=39_387, items=23_033, interactions=278_677)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def features(n: int, d: int, device: str, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(n // 50, 2), d, generator=gen)
    x = centres[torch.randint(0, centres.size(0), (n,), generator=gen)]
    x += 0.8 * torch.randn(n, d, generator=gen)
    return x.to(device)


def long_tail_interactions(users: int, items: int, nnz: int, seed: int = 0) -> torch.Tensor:
    """Zipf-like item popularity and user activity (>= 5 each, like a 5-core), deduplicated."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, items + 1) ** 0.8
    item_p /= item_p.sum()
    activity = rng.pareto(2.0, users) + 1.0
    per_user = 5 + rng.multinomial(nnz - 5 * users, activity / activity.sum())
    user = np.repeat(np.arange(users), per_user)
    item = rng.permutation(items)[rng.choice(items, size=user.size, p=item_p)]
    pairs = np.unique(user * items + item)
    return torch.from_numpy(np.stack([pairs // items, pairs % items]))


def timed(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


# ---------------------------------------------------------------- workers (one per subprocess)

def worker(task: str, n: int, d: int, device: str, k: int, threshold: float) -> dict:
    from mllmrec_pyg.testing.reference import reference_laplacian, reference_semantic_adjacency
    from mllmrec_pyg.transforms import jaccard_cooccurrence_graph, normalize_graph, threshold_knn_graph

    result = {"task": task, "n": n, "device": device}
    if task.startswith("cooc"):
        scale = n
        ui = long_tail_interactions(CLOTHING["users"] * scale, CLOTHING["items"] * scale,
                                    CLOTHING["interactions"] * scale)
        num_users, num_items = CLOTHING["users"] * scale, CLOTHING["items"] * scale
        ui = ui.to(device)
        result.update(users=num_users, items=num_items, interactions=int(ui.size(1)))
    else:
        x = features(n, d, device)
    torch.set_grad_enabled(False)
    base = rss_mb()

    if task == "ours":
        def run():
            ei, ew = threshold_knn_graph(x, k, threshold)
            return normalize_graph(ei, ew, n, "row")
        (ei, ew), seconds = timed(run, device)
        result["edges"] = int(ei.size(1))
    elif task == "dense":
        def run():
            return reference_laplacian(reference_semantic_adjacency(x, k, threshold))
        lap, seconds = timed(run, device)
        result["edges"] = int((lap != 0).sum())
    elif task == "matmul":
        _, seconds = timed(lambda: x @ x.t(), device)
    elif task.startswith("cooc"):
        (ei, ew), seconds = timed(lambda: jaccard_cooccurrence_graph(ui, num_users, num_items, k), device)
        result["edges"] = int(ei.size(1))
    else:
        raise ValueError(task)
    result["seconds"] = seconds
    if device == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mb"] = max(peak_mb() - base, 0.0)
        result["peak_rss_mb"] = peak_mb()  # the whole process: interpreter, torch, inputs
    return result


def spawn(task, n, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", task, "--n", str(n), "--d", str(args.d),
           "--device", args.device, "--k", str(args.k), "--threshold", str(args.threshold)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"task": task, "n": n, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(r: dict) -> str:
    if "error" in r:
        return f"  {r['task']:<8} N={r['n']:>9,}  FAILED: {r['error']}"
    return (f"  {r['task']:<8} N={r['n']:>9,}  {r['seconds']:8.2f} s   peak +{r['peak_mb']:9.1f} MiB"
            + (f" (process peak RSS {r['peak_rss_mb']:,.0f} MiB)" if "peak_rss_mb" in r else "")
            + (f"   edges {r['edges']:,}" if "edges" in r else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.d, args.device, args.k, args.threshold)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"d={args.d}, k={args.k}, threshold={args.threshold}")
    if 1 in args.only:
        n = 20_000
        print(f"\n[1] semantic graph, N={n:,}, d={args.d}")
        ours, dense, mm = spawn("ours", n, args), spawn("dense", n, args), spawn("matmul", n, args)
        for r in (ours, dense, mm):
            print(show(r))
        if all("error" not in r for r in (ours, dense, mm)):
            print(f"  speed-up vs dense reference: {dense['seconds'] / ours['seconds']:.1f}x; "
                  f"memory: {dense['peak_mb'] / max(ours['peak_mb'], 1):.1f}x less; "
                  f"ours / bare N*N*d matmul: {ours['seconds'] / mm['seconds']:.2f}x; "
                  f"same edge count: {ours['edges'] == dense['edges']}")
    if 2 in args.only and args.device == "cpu":
        n = 100_000
        print(f"\n[2] semantic graph, N={n:,}, d={args.d}, CPU (dense would need {n * n * 4 * 4 / 2**30:.0f}+ GiB)")
        print(show(spawn("ours", n, args)))
    if 3 in args.only:
        if args.device == "cuda" and torch.cuda.is_available():
            n = 1_000_000
            print(f"\n[3] semantic graph, N={n:,}, d={args.d}, CUDA ({torch.cuda.get_device_name()})")
            print(show(spawn("ours", n, args)))
        else:
            print("\n[3] N=1,000,000 needs --device cuda and a GPU: skipped")
    if 4 in args.only:
        print(f"\n[4] Jaccard co-occurrence graph (k={args.k}), synthetic long-tail interactions")
        for scale in (1, 10):
            r = spawn("cooc", scale, args)
            if "error" not in r:
                print(f"  {scale:>2}x Clothing: {r['users']:,} users, {r['items']:,} items, "
                      f"{r['interactions']:,} interactions: {r['seconds']:.2f} s, "
                      f"peak +{r['peak_mb']:.1f} MiB, edges {r['edges']:,}")
            else:
                print(show(r))


if __name__ == "__main__":
    main()
