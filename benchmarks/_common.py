"""Shared by the benchmark scripts: where the data is, the machine, tables and JSON results."""

from __future__ import annotations

import argparse
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENTSEARCH_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"
RESULTS = ROOT / "benchmarks" / "results"
LIBRARIES = ("latentsearch", "torch", "sentence-transformers", "faiss-cpu", "faiss-gpu", "sqlalchemy", "timm")


def benchmark_parser(doc: str | None, name: str, dataset: str | None = None) -> argparse.ArgumentParser:
    """The options the scripts share: the docstring as help, ``--out`` for the JSON result and, for
    a script that reads one of ``../shared/datasets``, ``--dataset`` and ``--batch-size``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if dataset is not None:
        parser.add_argument("--dataset", type=Path, default=DATASETS / dataset)
        parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, help=f"JSON result path [default: benchmarks/results/{name}.json]")
    return parser


def machine() -> dict[str, Any]:
    """The machine and library versions a result was measured with: ``latentsearch``'s own
    :func:`~latentsearch.evaluation.report.machine_info`, plus the versions of the libraries the
    scripts use that it does not list (``timm``, ...)."""
    from latentsearch.evaluation.report import machine_info

    info = machine_info()
    for name in LIBRARIES:
        if name not in info["libraries"]:
            try:
                info["libraries"][name] = version(name)
            except PackageNotFoundError:
                pass
    return info


def settings(args: Any) -> dict[str, Any]:
    """A script's argparse options as JSON can hold them (paths as text)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def write_result(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=2) + "\n")
    return path


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*(f"{v:.5f}" if isinstance(v, float) else str(v) for v in row))
    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns there and would squeeze the cells
        console = Console(width=250)
    console.print(table)
