"""Rendering benchmark results: terminal tables (rich), JSON, Markdown and a recall/QPS plot.

JSON documents have fixed top-level keys (``benchmark``, ``dataset``, ``machine``, ...) and every
result row has the same keys, so scripts can diff runs. ``machine`` records where the numbers
come from; ``dataset.fingerprint`` (blake2b of the input files' bytes, or of the arrays) tells
whether two runs measured the same data.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .ann import AnnPoint, against_hand_tuned

LIBRARIES = (
    "latentsearch", "numpy", "faiss-cpu", "faiss-gpu", "torch", "sentence-transformers",
    "sqlalchemy", "matplotlib",
)
QUALITY_METRICS = ("ndcg", "mrr", "map", "recall", "precision")
PLOT_RECALL = "recall@10"

# -- provenance ---------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Python, platform, CPU count, FAISS threads and library versions, and the UTC date."""
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "faiss_threads": _faiss_threads(),
        "load_average": _load_average(),  # other work on the machine skews the timings
        "libraries": libraries,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _faiss_threads() -> int | None:
    try:
        import faiss
    except ImportError:
        return None
    return int(faiss.omp_get_max_threads())


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on Windows
        return None


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """blake2b (128-bit, hex) of the files' bytes, in the order given."""
    h = hashlib.blake2b(digest_size=16)
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """blake2b (128-bit, hex) of each array's dtype, shape and C-order bytes."""
    h = hashlib.blake2b(digest_size=16)
    for x in arrays:
        x = np.ascontiguousarray(x)
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def ann_dataset(
    name: str, base: int, queries: int, dim: int, metric: str, groundtruth: str, fingerprint: str
) -> dict[str, Any]:
    """The ``dataset`` block of an ANN result; ``groundtruth`` says where it came from
    (a file name, or ``"exact (FAISS Flat)"``)."""
    return {
        "name": name, "base": base, "queries": queries, "dim": dim, "metric": metric,
        "groundtruth": groundtruth, "fingerprint": fingerprint,
    }


# -- Pareto front -------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better on
    both), ordered by the first coordinate. Equal points are all kept."""
    front = [
        i for i, (x, y) in enumerate(points)
        if not any(
            (ox >= x and oy >= y) and (ox > x or oy > y) for ox, oy in points
        )
    ]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def ann_front(points: Sequence[AnnPoint], recall_key: str = PLOT_RECALL) -> list[int]:
    """Indices of the points on the QPS / ``recall_key`` Pareto front."""
    return pareto_front([(p.qps, p.recall[_recall_key(points, recall_key)]) for p in points])


def _recall_key(points: Sequence[AnnPoint], wanted: str) -> str:
    keys = list(points[0].recall) if points else [wanted]
    return wanted if wanted in keys else keys[-1]


# -- ANN: JSON, table, Markdown, plot -----------------------------------------------------------


def ann_json(points: Sequence[AnnPoint], dataset: Mapping[str, Any], k_values: Sequence[int]) -> dict[str, Any]:
    """The JSON document of an ANN sweep; ``pareto`` lists the spec labels on the recall@10 front."""
    front = ann_front(points) if points else []
    return {
        "benchmark": "ann",
        "dataset": dict(dataset),
        "k_values": sorted({int(k) for k in k_values}),
        "machine": machine_info(),
        "results": [p.to_dict() for p in points],
        "pareto": [points[i].spec for i in front],
        "tuned": against_hand_tuned(points),
    }


def _ann_header(points: Sequence[AnnPoint]) -> list[str]:
    recalls = list(points[0].recall) if points else []
    return ["index", *recalls, "QPS", "p50 ms", "p95 ms", "p99 ms", "build s", "size", "peak mem", "front"]


def _ann_rows(points: Sequence[AnnPoint]) -> list[list[str]]:
    front = set(ann_front(points)) if points else set()
    return [
        [
            p.spec,
            *(f"{v:.4f}" for v in p.recall.values()),
            f"{p.qps:,.0f}",
            *(f"{p.latency_ms[q]:.3f}" for q in ("p50", "p95", "p99")),
            f"{p.build_seconds:.2f}",
            human_bytes(p.index_bytes),
            human_bytes(p.peak_memory_bytes),
            "*" if i in front else "",
        ]
        for i, p in enumerate(points)
    ]


def ann_table(points: Sequence[AnnPoint], title: str | None = None) -> Any:
    """A rich ``Table`` of the points; ``*`` marks the QPS / recall@10 Pareto front."""
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(_ann_header(points)):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in _ann_rows(points):
        table.add_row(*row)
    return table


def ann_markdown(points: Sequence[AnnPoint], title: str | None = None) -> str:
    """A Markdown table of the points (``*`` marks the Pareto front), under ``title`` if given,
    and where each tuned spec landed against the hand-set points."""
    header = _ann_header(points)
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(":---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in _ann_rows(points)]
    tuned = tuned_lines(points)
    return "\n".join(lines + ([""] + [f"- {line}" for line in tuned] if tuned else [])) + "\n"


def tuned_lines(points: Sequence[AnnPoint]) -> list[str]:
    """One sentence per tuned spec (``auto``, ``recall=``): what it chose, the recall it got, and
    its queries/s against the fastest hand-set point of the sweep that reaches the same target."""
    out = []
    for t in against_hand_tuned(points):
        got = f"{t['spec']} chose {t['chose']}; recall@10 {t['recall@10']:.4f} ({'meets' if t['met'] else 'misses'} {t['target']:g})"
        if t["best_hand_tuned"] is None:
            out.append(f"{got}; no hand-set point of the sweep reaches {t['target']:g}")
        else:
            out.append(f"{got}, {t['qps']:,.0f} q/s = {t['qps_vs_best']:.2f}x the fastest hand-set point that "
                       f"reaches it ({t['best_hand_tuned']}, {t['best_hand_tuned_qps']:,.0f} q/s)")
    return out


def plot_ann(points: Sequence[AnnPoint], path: str | Path, title: str | None = None,
             recall_key: str = PLOT_RECALL) -> Path:
    """Write a PNG of recall against QPS (log x), one line per factory, the Pareto front marked."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    key = _recall_key(points, recall_key)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    for factory in dict.fromkeys(p.index for p in points):
        mine = sorted((p for p in points if p.index == factory), key=lambda p: p.qps)
        ax.plot([p.qps for p in mine], [p.recall[key] for p in mine], marker="o", label=factory)
        for p in mine:
            if p.search:
                text = ",".join(str(v) for v in p.search.values())
                ax.annotate(text, (p.qps, p.recall[key]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, alpha=0.8)
    front = [points[i] for i in ann_front(points, key)] if points else []
    if front:
        ax.plot([p.qps for p in front], [p.recall[key] for p in front], linestyle="--",
                color="black", linewidth=1, drawstyle="steps-post", zorder=0)
        ax.scatter([p.qps for p in front], [p.recall[key] for p in front], s=140,
                   facecolors="none", edgecolors="black", linewidths=1.2, label="Pareto front", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("queries per second (batch, log scale)")
    ax.set_ylabel(key)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, format="png", dpi=120)
    return path


def print_table(table: Any) -> None:
    """Print a rich table on stdout, at its natural width when stdout is not a terminal."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns there and would squeeze the cells
        console = Console(width=250)
    console.print(table)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- retrieval quality --------------------------------------------------------------------------


def quality_ks(metrics: Mapping[str, float]) -> list[int]:
    return sorted({int(key.split("@", 1)[1]) for key in metrics})


def quality_table(results: Sequence[Mapping[str, Any]], title: str | None = None) -> Any:
    """A rich ``Table``: one row per (index, metric), one column per cutoff k.

    ``results``: dicts with ``index`` (a spec) and ``metrics`` (``{"ndcg@10": ...}``).
    """
    from rich.table import Table

    ks = quality_ks(results[0]["metrics"]) if results else []
    table = Table(title=title)
    table.add_column("index", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for result in results:
        for n, name in enumerate(QUALITY_METRICS):
            values = [result["metrics"].get(f"{name}@{k}") for k in ks]
            table.add_row(
                result["index"] if n == 0 else "", name,
                *("" if v is None else f"{v:.4f}" for v in values),
                end_section=n == len(QUALITY_METRICS) - 1,
            )
    return table


def quality_markdown(results: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """The same rows as :func:`quality_table`, as a Markdown table under ``title`` if given."""
    ks = quality_ks(results[0]["metrics"]) if results else []
    lines = [f"### {title}", ""] if title else []
    lines.append("| index | metric | " + " | ".join(f"@{k}" for k in ks) + " |")
    lines.append("|:---|:---|" + "---:|" * len(ks))
    for result in results:
        for name in QUALITY_METRICS:
            values = [result["metrics"].get(f"{name}@{k}") for k in ks]
            cells = ["" if v is None else f"{v:.4f}" for v in values]
            index = str(result["index"]).replace("|", "\\|")
            lines.append(f"| {index} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def quality_json(
    dataset: str, split: str, encoder: str, results: Sequence[Mapping[str, Any]], fingerprint: str
) -> dict[str, Any]:
    """The JSON document of a quality run; each result has the same keys."""
    keys = ("index", "metrics", "queries", "documents", "index_seconds", "search_seconds")
    return {
        "benchmark": "quality",
        "dataset": {"name": dataset, "split": split, "fingerprint": fingerprint},
        "encoder": encoder,
        "machine": machine_info(),
        "results": [{key: result[key] for key in keys} for result in results],
    }
