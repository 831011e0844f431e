"""Building FAISS indexes from factory strings: the spec checked first, FAISS's settings that
latentsearch changes, and how many vectors an index needs before it can be trained."""

from __future__ import annotations

from typing import Any

from ..errors import UnknownSpecError
from .selection import DEFAULT_EF_CONSTRUCTION

MIN_POINTS_PER_CENTROID = 39  # below this FAISS k-means warns that training is unreliable


def faiss_metric(metric: str) -> int:
    import faiss

    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def build_faiss(factory: str, dim: int, metric: str) -> Any:
    """``faiss.index_factory`` with an error that names the bad spec."""
    import faiss

    from .selection import check_factory

    check_factory(factory, dim)  # first: FAISS accepts specs it then crashes on (HNSW0, PQ8x0)
    try:
        index = faiss.index_factory(dim, factory, faiss_metric(metric))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise UnknownSpecError(
            f"FAISS cannot build the index spec {factory!r} for dimension {dim} ({first}); "
            "use e.g. Flat, HNSW32, IVF1024,Flat, IVF1024,PQ16 or auto"
        ) from exc
    # Polysemous training (FAISS's default for PQ) costs most of the training time and only
    # serves polysemous search, which latentsearch never uses.
    inner = _ivf(index) or faiss.downcast_index(index)
    inner = faiss.downcast_index(inner)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efConstruction = DEFAULT_EF_CONSTRUCTION
    return index


def _ivf(index: Any) -> Any | None:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def training_size(index: Any) -> int:
    """How many vectors ``index`` needs before it can be trained reliably (0: no training)."""
    import faiss

    if index.is_trained:
        return 0
    need = 1
    ivf = _ivf(index)
    if ivf is not None:
        need = max(need, MIN_POINTS_PER_CENTROID * ivf.nlist)
        inner = faiss.downcast_index(ivf)
    else:
        inner = faiss.downcast_index(index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        for i in range(outer.chain.size()):
            if isinstance(faiss.downcast_VectorTransform(outer.chain.at(i)), faiss.OPQMatrix):
                need = max(need, MIN_POINTS_PER_CENTROID * 256)  # OPQ trains 8-bit sub-quantisers
    pq = getattr(inner, "pq", None)
    if pq is not None:
        need = max(need, MIN_POINTS_PER_CENTROID * pq.ksub)
    return need
