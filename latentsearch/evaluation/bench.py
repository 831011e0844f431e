"""Retrieval quality of a collection on a BEIR-format dataset.

The corpus is indexed once into a collection (reused when it exists, so many index specs can be
scored against one encoding); queries are searched in batches; the run is scored with
:mod:`.metrics`, which follows trec_eval.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ingest.records import Record
from .datasets import BeirDataset, document_text, load_beir
from .metrics import DEFAULT_KS, evaluate


@dataclass
class QualityResult:
    metrics: dict[str, float]
    queries: int
    documents: int
    index_seconds: float  # 0 when an existing collection was reused
    search_seconds: float
    collection: dict[str, Any] = field(default_factory=dict)


def corpus_records(dataset: BeirDataset) -> Iterator[Record]:
    """One record per document, keyed by its id, embedded as MTEB does (title + " " + text)."""
    for doc_id, doc in dataset.corpus.items():
        yield Record(text=document_text(doc), key=doc_id, source=doc_id, metadata={"title": doc.get("title", "")})


def beir_quality(
    dataset_dir: str | Path,
    collection_path: str | Path,
    encoder: str = "minilm",
    index: str = "Flat",
    split: str = "test",
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 64,
    mode: str = "dense",
) -> QualityResult:
    """Index the corpus into ``collection_path`` (unless it holds a collection) and score the split,
    searching with ``mode`` (``dense``, ``lexical`` or ``hybrid``; see :meth:`Collection.search`)."""
    from ..collection import Collection
    from ..config import manifest_path

    dataset = load_beir(dataset_dir, split)
    index_seconds = 0.0
    if manifest_path(Path(collection_path)).exists():
        col = Collection.open(collection_path)
        if index != col.config.index:
            col.reindex(index)
    else:
        col = Collection.create(collection_path, encoder=encoder, index=index)
        started = time.perf_counter()
        col.add_records(corpus_records(dataset), batch_size=batch_size, on_conflict="update")
        col.flush()
        index_seconds = time.perf_counter() - started
    with col:
        qids = list(dataset.queries)
        started = time.perf_counter()
        run: dict[str, dict[str, float]] = {}
        depth = max(ks)
        for start in range(0, len(qids), 256):
            chunk = qids[start : start + 256]
            hits = col.search_batch([dataset.queries[q] for q in chunk], k=depth, mode=mode)
            for qid, row in zip(chunk, hits):
                run[qid] = {h.key: h.score for h in row if h.key is not None}
        search_seconds = time.perf_counter() - started
        info = col.info()
    return QualityResult(
        metrics=evaluate(dataset.qrels, run, ks),
        queries=len(qids),
        documents=len(dataset.corpus),
        index_seconds=index_seconds,
        search_seconds=search_seconds,
        collection=info,
    )
