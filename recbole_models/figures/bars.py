r"""Bar chart of test scores per run name, with the seeds' spread as error bars.

For a name :math:`n` with finished runs on seeds :math:`S_n` and a metric :math:`m`,
the bar is :math:`\bar v_n = \frac{1}{|S_n|}\sum_{s \in S_n} v_{n,s}` and its error bar
:math:`\pm\,\mathrm{sd}(v_{n,\cdot})` (sample standard deviation, ddof 1). A name with one
seed gets no error bar (it has no spread to show, not a spread of zero); when no name
has two seeds the title calls the chart a smoke run. Failed runs (``error``) are left out.

Used by ``python -m recbole_models.compare`` (``<out>.png``) and ``mllmrec demo``.
"""
import os
from typing import Dict, List, Sequence, Tuple

__all__ = ["DEFAULT_METRICS", "bar_chart", "seeds_label"]

DEFAULT_METRICS: Tuple[Tuple[str, str], ...] = (("recall@20", "Recall@20"), ("ndcg@20", "NDCG@20"))


def seeds_label(counts: Sequence[int]) -> str:
    """``"mean ± std over 3 seeds"``, ``"... over 1–3 seeds"`` or the one-seed warning."""
    most = max(counts)
    if most < 2:
        return "one seed (smoke run, no error bars)"
    return f"mean ± std over {most} seeds" if min(counts) == most else f"mean ± std over 1–{most} seeds"


def bar_chart(results: List[Dict], path: str, title: str,
              metrics: Sequence[Tuple[str, str]] = DEFAULT_METRICS) -> None:
    """Writes the chart of ``results`` (dicts with ``name`` and ``test_result``) to the PNG
    ``path`` (atomically).

    Args:
        results: one dict per finished (name, seed) run, as ``compare`` returns them.
        path: output PNG.
        title: first title line (e.g. the dataset and protocol); the seed count is added.
        metrics: ``(key in test_result, axis label)`` pairs, one bar per name each; a
            metric no run has is skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in results if not r.get("error") and r.get("test_result")]
    if not ok:
        raise ValueError(f"{path}: no finished run to plot")
    names = list(dict.fromkeys(r["name"] for r in ok))
    counts = [sum(r["name"] == n for r in ok) for n in names]
    metrics = [(k, label) for k, label in metrics if any(k in r["test_result"] for r in ok)]
    if not metrics:
        raise ValueError(f"{path}: the runs have none of the metrics to plot")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4))
    width = 0.8 / len(metrics)
    series = []
    for k, (key, label) in enumerate(metrics):
        values = [np.array([r["test_result"][key] for r in ok if r["name"] == n and key in r["test_result"]])
                  for n in names]
        means = [v.mean() if v.size else np.nan for v in values]
        stds = [v.std(ddof=1) if v.size > 1 else np.nan for v in values]  # one seed: no bar, not a zero one
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, means, width, yerr=stds if max(counts) > 1 else None, capsize=3, label=label)
        series.append((means, stds))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{n}\n({c} seed{'s' if c > 1 else ''})" if max(counts) > 1 else n
                        for n, c in zip(names, counts)], rotation=30, ha="right")
    ax.set_ylabel("test score (full ranking)")
    ax.set_title(f"{title}\n{seeds_label(counts)}")
    top = max(np.nanmax(np.array(m) + np.nan_to_num(np.array(e))) for m, e in series)
    ax.set_ylim(0, top * 1.22)  # head room: the legend sits above the bars, not on them
    ax.legend(loc="upper right", ncol=len(metrics))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)
