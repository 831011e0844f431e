"""latentsearch against its peers on the same vectors and metadata, side by side in one run.

    python benchmarks/peers.py                        # 50,000 x 128 clustered vectors, 1,000 queries
    python benchmarks/peers.py --n 20000 --queries 500

The data is seeded and synthetic: points around 100 centres, L2-normalised, searched by cosine
similarity, each with a metadata field ``bucket`` in 0..99 drawn uniformly, so ``bucket == 7``
selects about 1% of the rows. Every system gets the same vectors, ids, metadata and queries:

* **latentsearch**: ``index="auto"`` (its default; exact ``Flat`` below 100,000 vectors) and
  ``HNSW32`` with efSearch 16 to 512 (128 is its default). Filter:
  ``search_batch(..., where={"bucket": 7})``. Its hits carry each item's stored metadata; the
  peers below return ids and distances only.
* **raw FAISS**: ``IndexHNSWFlat(d, 32, METRIC_INNER_PRODUCT)`` (efConstruction 40, its default)
  with efSearch 16 (default) to 512. Filter: ``IDSelectorBatch`` in ``SearchParametersHNSW``.
  Also ``IVF{sqrt(n)},PQ{d/16}`` at nprobe 20, alone and with an exact re-rank
  (``IndexRefineFlat``, 10 x k): the shape of LanceDB's default IVF_PQ, as a cross-check.
* **hnswlib**: ``space="cosine"``, ``init_index`` defaults (M 16, ef_construction 200), query ef
  10 (default) to 512. Filter: ``knn_query(..., filter=callable)`` (one thread, as hnswlib's
  README advises for Python filters).
* **Chroma**: ``PersistentClient`` in a temporary folder, collections with cosine space
  (collection metadata ``hnsw:space``), added in batches of the client's maximum batch size;
  ``hnsw:search_ef`` at its default (100 in Chroma 1.x) and at 16, 32, 64 and 128, one collection
  each (a depth changed later does not reach an index already loaded). Filter:
  ``query(..., where={"bucket": 7})``.
* **LanceDB**: a local dataset in a temporary folder; searched first without an index (brute
  force, what LanceDB recommends below roughly 100k rows) and, when the table has at least
  ``--lance-index-min`` rows, with ``create_index(metric="cosine")`` at LanceDB's defaults (IVF_PQ
  with sub-vectors of 16 dimensions; default nprobes), with ``refine_factor(10)`` and
  ``nprobes(64)``, with four times the sub-vectors, and with ``index_type="IVF_HNSW_SQ"`` (the
  index LanceDB documents for high recall) at ef 16 to 256. Filter:
  ``.where("bucket = 7", prefilter=True)``. LanceDB is searched one query at a time (its Python
  API has no batched vector query); the others in one batch.

Every HNSW system is swept over its search depth, so besides each row the script reports
**queries/s at matched recall**: per system, the fastest setting it was run at that reaches
recall@10 of 0.90, 0.95 and 0.99 (measured points only, no interpolation).

Queries/s are the best of three runs for searches that take under 2 s (one otherwise).
Reported per system and setting: ingest seconds (index build included, on the first row of each
built index), recall@10 against exact numpy brute force, queries/s, and
filtered recall@10 against the exact filtered top 10 with the mean and minimum number of results
returned per query (filtered search at the default and at a deeper setting of each index).
Peers that fail to import are listed as "not installed", never skipped
silently. Prints a table and writes benchmarks/results/peers.json.
"""

# ruff: noqa: B023  (each closure is called within its own loop iteration)
from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result

from latentsearch.evaluation.metrics import recall_against_exact

K = 10
BUCKET = 7
BEST_EF = 128

Row = dict[str, Any]


class Data:
    """The seeded corpus, queries, metadata and exact answers that every system is measured on."""

    def __init__(self, n: int, dim: int, nq: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(100, dim)).astype(np.float32)
        xb = centres[rng.integers(0, 100, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
        xq = centres[rng.integers(0, 100, nq)] + 0.6 * rng.normal(size=(nq, dim)).astype(np.float32)
        self.xb = normalise(xb)
        self.xq = normalise(xq)
        self.bucket = rng.integers(0, 100, n).astype(np.int64)
        self.ids = np.arange(n, dtype=np.int64)
        self.n, self.dim, self.nq = n, dim, nq
        self.exact = exact_topk(self.xq, self.xb, K)
        self.selected = np.flatnonzero(self.bucket == BUCKET)
        sub = exact_topk(self.xq, self.xb[self.selected], min(K, len(self.selected)))
        self.exact_filtered = np.full((nq, K), -1, dtype=np.int64)
        self.exact_filtered[:, : sub.shape[1]] = self.selected[sub]


def normalise(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def exact_topk(xq: np.ndarray, xb: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by inner product (cosine on normalised vectors), best first, in query blocks."""
    out = np.empty((len(xq), k), dtype=np.int64)
    for s in range(0, len(xq), 256):
        scores = xq[s : s + 256] @ xb.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[s : s + 256] = np.take_along_axis(part, order, axis=1)
    return out


def pad(results: list[list[int]]) -> np.ndarray:
    """Lists of ids (possibly short) as an (nq, K) array padded with -1."""
    out = np.full((len(results), K), -1, dtype=np.int64)
    for i, r in enumerate(results):
        r = list(r)[:K]
        out[i, : len(r)] = r
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def best_time(fn: Callable[[], Any], quick: float = 2.0, repeats: int = 3) -> tuple[Any, float]:
    """The result and the fastest of up to ``repeats`` runs: a search that takes under ``quick``
    seconds is run again, since one short run on a shared machine is noise."""
    result, best = timed(fn)
    for _ in range(repeats - 1):
        if best >= quick:
            break
        best = min(best, timed(fn)[1])
    return result, best


def row(system: str, setting: str, data: Data, ingest: float | None, search: Callable[[], np.ndarray],
        filtered: Callable[[], np.ndarray] | None, note: str = "") -> Row:
    """Measure one setting: the unfiltered search (timed, for queries/s) and the filtered one."""
    ids, seconds = best_time(search)
    out: Row = {
        "system": system, "setting": setting, "ingest_seconds": None if ingest is None else round(ingest, 2),
        "recall_at_10": round(recall_against_exact(ids, data.exact, K), 4), "qps": round(data.nq / seconds, 1),
        "note": note,
    }
    if filtered is not None:
        fids, fseconds = best_time(filtered)
        counts = (fids != -1).sum(axis=1)
        wrong = int(np.count_nonzero((fids != -1) & (data.bucket[np.clip(fids, 0, None)] != BUCKET)))
        out.update({
            "filtered_recall_at_10": round(recall_against_exact(fids, data.exact_filtered, K), 4),
            "filtered_results_mean": round(float(counts.mean()), 2), "filtered_results_min": int(counts.min()),
            "filtered_qps": round(data.nq / fseconds, 1), "filtered_wrong_bucket": wrong,
        })
    return out


# -- the systems ---------------------------------------------------------------------------------


EF_SWEEP = (16, 32, 64, 128, 256, 512)  # HNSW search depths tried by every HNSW system


def sweep_rows(system: str, data: Data, settings: list[tuple[str, Callable[[], np.ndarray], Callable[[], np.ndarray] | None]],
               ingest: float | None, note: str) -> list[Row]:
    """One row per search setting of one built index (filtered search only where given);
    the ingest time goes on the first row only, since the index is built once."""
    return [row(system, label, data, ingest if i == 0 else None, search, filtered, note if i == 0 else "same index")
            for i, (label, search, filtered) in enumerate(settings)]


def bench_latentsearch(data: Data, tmp: Path) -> list[Row]:
    import latentsearch

    rows = []
    for spec, note in (("auto", "default: auto (exact Flat below 100,000 vectors)"),
                       ("HNSW32", "HNSW32; efSearch set per row on the open collection")):
        def ingest() -> Any:
            col = latentsearch.create(tmp / f"ls-{spec}", encoder=None, dim=data.dim, index=spec, metric="cosine")
            new = col.add(data.xb, metadata=[{"bucket": int(b)} for b in data.bucket], batch_size=10_000)
            col.flush()  # the index is built and its snapshot saved
            return col, np.asarray(new, dtype=np.int64)

        (col, new_ids), seconds = timed(ingest)
        position = {int(i): p for p, i in enumerate(new_ids)}
        queries = list(data.xq)

        def to_pos(hits: list[list[Any]]) -> np.ndarray:
            return pad([[position[h.id] for h in hs] for hs in hits])

        def search(ef: int | None = None, where: dict | None = None) -> np.ndarray:
            col.index().search_options = {} if ef is None else {"efSearch": ef}  # None: its default (128)
            return to_pos(col.search_batch(queries, K, where=where))

        if spec == "auto":
            rows.append(row("latentsearch", f"index=auto → {col.index().factory}", data, seconds, search,
                            lambda: search(where={"bucket": BUCKET}), note))
        else:
            rows += sweep_rows("latentsearch", data, [
                (f"HNSW32 efSearch={ef}" + (" (default)" if ef == 128 else ""), lambda ef=ef: search(ef),
                 (lambda: search(None, {"bucket": BUCKET})) if ef == 128 else None)
                for ef in EF_SWEEP], seconds, note)
        col.close()
    return rows


def bench_faiss(data: Data, tmp: Path) -> list[Row]:
    import faiss

    def ingest() -> Any:
        index = faiss.IndexHNSWFlat(data.dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.add(data.xb)
        return index

    index, seconds = timed(ingest)
    default_ef = index.hnsw.efSearch
    selector = faiss.IDSelectorBatch(data.selected)

    def search(ef: int, sel: Any = None) -> np.ndarray:
        return index.search(data.xq, K, params=faiss.SearchParametersHNSW(sel=sel, efSearch=ef))[1]

    rows = sweep_rows("raw FAISS", data, [
        (f"HNSW32 efSearch={ef}" + (" (default)" if ef == default_ef else ""), lambda ef=ef: search(ef),
         (lambda ef=ef: search(ef, selector)) if ef in (default_ef, BEST_EF) else None)
        for ef in EF_SWEEP], seconds, "IndexHNSWFlat, efConstruction 40 (default); filter: IDSelectorBatch")
    # A cross-check for LanceDB's IVF_PQ: the same partitions (sqrt(n)) and code size (dim/16
    # sub-vectors of 8 bits), with and without an exact re-rank of 10 x k candidates.
    nlist, m = int(data.n**0.5), max(1, data.dim // 16)
    if data.n >= 39 * max(nlist, 256):  # FAISS wants 39 training points per centroid and PQ code
        def ingest_pq() -> Any:
            pq = faiss.index_factory(data.dim, f"IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
            refined = faiss.IndexRefineFlat(pq)
            refined.k_factor = 10
            refined.train(data.xb)
            refined.add(data.xb)
            faiss.extract_index_ivf(pq).nprobe = 20  # LanceDB's default nprobes
            return pq, refined

        (pq, refined), pq_seconds = timed(ingest_pq)
        rows += sweep_rows("raw FAISS", data, [
            (f"IVF{nlist},PQ{m} nprobe=20", lambda: pq.search(data.xq, K)[1], None),
            (f"IVF{nlist},PQ{m} nprobe=20 + exact re-rank of {10 * K}", lambda: refined.search(data.xq, K)[1], None)],
            pq_seconds, "LanceDB's default IVF_PQ shape, for comparison")
    return rows


def bench_hnswlib(data: Data, tmp: Path) -> list[Row]:
    import hnswlib

    def ingest() -> Any:
        index = hnswlib.Index(space="cosine", dim=data.dim)
        index.init_index(max_elements=data.n)  # defaults: M=16, ef_construction=200
        index.add_items(data.xb, data.ids)
        return index

    index, seconds = timed(ingest)
    keep = set(data.selected.tolist())
    k_filtered = min(K, len(keep))  # hnswlib cannot return k results when fewer than k match
    errors = {}

    def search(ef: int) -> np.ndarray:
        index.set_ef(ef)
        return index.knn_query(data.xq, k=K)[0].astype(np.int64)

    def filtered(ef: int) -> np.ndarray:
        # Per query: hnswlib raises RuntimeError when it finds fewer than k matches, and one
        # such query would void a whole batch. A query that raises counts as 0 results.
        index.set_ef(ef)
        out = []
        for q in data.xq:
            try:
                labels, _ = index.knn_query(q, k=k_filtered, filter=lambda label: label in keep, num_threads=1)
                out.append(labels[0].tolist())
            except RuntimeError:
                errors[ef] = errors.get(ef, 0) + 1
                out.append([])
        return pad(out)

    rows = sweep_rows("hnswlib", data, [
        (f"M=16 ef={ef}" + (" (default)" if ef == 10 else ""), lambda ef=ef: search(ef),
         (lambda ef=ef: filtered(ef)) if ef in (10, BEST_EF) else None)
        for ef in (10, *EF_SWEEP)], seconds,
        "ef_construction 200 (default); filter: Python callable, 1 thread, one query per call")
    for r in rows:
        ef = int(r["setting"].split("ef=")[1].split()[0])
        if k_filtered < K and "filtered_recall_at_10" in r:
            r["note"] += f"; filtered k={k_filtered} (only {k_filtered} rows match)"
        if errors.get(ef):
            r["note"] += f"; {errors[ef]} filtered queries raised RuntimeError (fewer than k found), counted as 0 results"
    return rows


def bench_chroma(data: Data, tmp: Path) -> list[Row]:
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp / "chroma"))
    batch = client.get_max_batch_size() if hasattr(client, "get_max_batch_size") else 5000
    str_ids = [str(i) for i in data.ids]
    metas = [{"bucket": int(b)} for b in data.bucket]
    queries = data.xq.tolist()
    default_ef = 100  # Chroma 1.x's hnsw ef_search default (10 in 0.x)
    rows = []
    # One collection per search depth: a changed ef_search (modify) does not reach an index
    # already loaded in the process, so each depth is fixed when its collection is created.
    for ef in sorted({default_ef, *EF_SWEEP[:4]}):
        def ingest(ef: int = ef) -> Any:
            col = client.create_collection(f"bench_ef{ef}", metadata={"hnsw:space": "cosine", "hnsw:search_ef": ef})
            for s in range(0, data.n, batch):
                col.add(ids=str_ids[s : s + batch], embeddings=data.xb[s : s + batch], metadatas=metas[s : s + batch])
            return col

        col, seconds = timed(ingest)

        def search(col: Any = col, where: dict | None = None) -> np.ndarray:
            res = col.query(query_embeddings=queries, n_results=K, where=where, include=["distances"])
            return pad([[int(i) for i in r] for r in res["ids"]])

        rows.append(row("Chroma", f"search_ef={ef}" + (" (default)" if ef == default_ef else ""), data, seconds,
                        search, (lambda col=col: search(col, {"bucket": BUCKET})) if ef in (default_ef, BEST_EF) else None,
                        f"PersistentClient, cosine and search_ef via collection metadata, add batches of {batch}"))
    return rows


def bench_lancedb(data: Data, tmp: Path, index_min: int) -> list[Row]:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(tmp / "lance"))
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(data.xb.reshape(-1), type=pa.float32()), data.dim)
    table = pa.table({"id": pa.array(data.ids), "bucket": pa.array(data.bucket), "vector": vectors})
    tbl, seconds = timed(lambda: db.create_table("bench", data=table))

    def run(configure: Callable[[Any], Any], where: str | None = None) -> np.ndarray:
        out = []
        for q in data.xq:
            query = tbl.search(q).distance_type("cosine").select(["id", "_distance"]).limit(K)
            if where is not None:
                query = query.where(where, prefilter=True)
            out.append(configure(query).to_arrow()["id"].to_pylist())
        return pad(out)

    same = lambda query: query
    filt = f"bucket = {BUCKET}"
    rows = [row("LanceDB", "no index (brute force)", data, seconds, lambda: run(same), lambda: run(same, filt),
                "LanceDB's recommendation below ~100k rows; one query per call")]
    if data.n < index_min:
        rows.append({"system": "LanceDB", "setting": "IVF_PQ", "note":
                     f"not built: {data.n} rows < --lance-index-min {index_min} (too few rows to train IVF_PQ)"})
        return rows
    # IVF_PQ with LanceDB's defaults (sub-vectors of 16 dimensions: compact and coarse), then the
    # refine step it documents for recall, then IVF_HNSW_SQ, the index it documents for high recall.
    _, build = timed(lambda: tbl.create_index(metric="cosine"))
    pq = [("IVF_PQ defaults", same), ("IVF_PQ refine_factor=10", lambda q: q.refine_factor(10)),
          ("IVF_PQ nprobes=64 refine_factor=10", lambda q: q.nprobes(64).refine_factor(10))]
    rows += sweep_rows("LanceDB", data, [
        (label, lambda c=c: run(c), (lambda c=c: run(c, filt)) if i in (0, 2) else None)
        for i, (label, c) in enumerate(pq)], seconds + build,
        f"create_index(metric='cosine') defaults; index build {build:.1f} s included")
    sub = data.dim // 4  # 4 dimensions per sub-vector instead of 16: four times the code size
    _, build = timed(lambda: tbl.create_index(metric="cosine", num_sub_vectors=sub))
    rows += sweep_rows("LanceDB", data, [
        (f"IVF_PQ num_sub_vectors={sub}", lambda: run(same), None),
        (f"IVF_PQ num_sub_vectors={sub} refine_factor=10", lambda: run(lambda q: q.refine_factor(10)), None)],
        seconds + build, f"create_index(metric='cosine', num_sub_vectors={sub}); index build {build:.1f} s included")
    _, build = timed(lambda: tbl.create_index(metric="cosine", index_type="IVF_HNSW_SQ"))
    rows += sweep_rows("LanceDB", data, [
        (f"IVF_HNSW_SQ ef={ef}", lambda ef=ef: run(lambda q: q.ef(ef)),
         (lambda ef=ef: run(lambda q: q.ef(ef), filt)) if ef == BEST_EF else None)
        for ef in EF_SWEEP[:5]], seconds + build,
        f"create_index(metric='cosine', index_type='IVF_HNSW_SQ'); index build {build:.1f} s included")
    return rows


TARGETS = (0.9, 0.95, 0.99)


def matched_recall(rows: list[Row]) -> list[Row]:
    """Per system and recall target: the fastest measured setting that reaches the target (no
    interpolation: every figure is a setting that was run)."""
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        measured = [r for r in rows if r["system"] == system and "qps" in r]
        entry: Row = {"system": system}
        for target in TARGETS:
            ok = [r for r in measured if r["recall_at_10"] >= target]
            best = max(ok, key=lambda r: r["qps"]) if ok else None
            entry[f"qps_at_{target}"] = best["qps"] if best else None
            entry[f"setting_at_{target}"] = best["setting"] if best else "not reached"
        if measured:
            out.append(entry)
    return out


PEERS: dict[str, tuple[str, Callable[..., list[Row]]]] = {
    "latentsearch": ("latentsearch", bench_latentsearch),
    "raw FAISS": ("faiss-cpu", bench_faiss),
    "hnswlib": ("hnswlib", bench_hnswlib),
    "Chroma": ("chromadb", bench_chroma),
    "LanceDB": ("lancedb", bench_lancedb),
}
MODULES = {"latentsearch": "latentsearch", "raw FAISS": "faiss", "hnswlib": "hnswlib", "Chroma": "chromadb",
           "LanceDB": "lancedb"}


def package_version(name: str) -> str | None:
    for candidate in (name, "faiss-gpu") if name == "faiss-cpu" else (name,):
        try:
            return version(candidate)
        except PackageNotFoundError:
            pass
    return None


def fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "peers")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--lance-index-min", type=int, default=10_000,
                        help="build a LanceDB IVF_PQ index only with at least this many rows")
    parser.add_argument("--only", nargs="*", choices=list(PEERS), help="run only these systems")
    args = parser.parse_args(argv)

    data = Data(args.n, args.dim, args.queries)
    rows: list[Row] = []
    installed: dict[str, str | None] = {}
    for system, (dist, fn) in PEERS.items():
        if args.only and system not in args.only:
            continue
        try:
            __import__(MODULES[system])
        except Exception as exc:  # noqa: BLE001  an ImportError, or a broken install that fails while importing
            installed[system] = None
            rows.append({"system": system, "setting": "not installed", "note": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        installed[system] = package_version(dist)
        tmp = Path(tempfile.mkdtemp(prefix=f"peers-{dist}-"))
        try:
            extra = (args.lance_index_min,) if system == "LanceDB" else ()
            rows.extend(fn(data, tmp, *extra))
        except Exception as exc:  # noqa: BLE001  a peer that breaks is reported, not fatal
            traceback.print_exc()
            rows.append({"system": system, "setting": "failed", "note": f"{type(exc).__name__}: {exc}"[:200]})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"done: {system}", file=sys.stderr, flush=True)

    table = [[r["system"] + (f" {installed[r['system']]}" if installed.get(r["system"]) else ""), r["setting"],
              fmt(r.get("ingest_seconds"), ".2f"), fmt(r.get("recall_at_10"), ".4f"), fmt(r.get("qps"), ",.0f"),
              fmt(r.get("filtered_recall_at_10"), ".4f"),
              "" if "filtered_results_mean" not in r else f"{r['filtered_results_mean']:.1f} / {r['filtered_results_min']}",
              fmt(r.get("filtered_qps"), ",.0f"), r.get("note", "")] for r in rows]
    print_table(f"{args.n:,} x {args.dim} clustered vectors, cosine, {args.queries:,} queries, k={K}; "
                f"filter bucket={BUCKET} selects {len(data.selected):,} rows ({len(data.selected) / args.n:.1%})",
                ["system", "setting", "ingest s", "recall@10", "QPS", "filtered recall@10",
                 "filtered results mean / min", "filtered QPS", "note"], table)
    matched = matched_recall(rows)
    print_table("queries/s at matched recall@10: the fastest setting of each system that reaches the target",
                ["system", *(f"QPS at recall ≥ {t}" for t in TARGETS)],
                [[m["system"], *(f"{fmt(m[f'qps_at_{t}'], ',.0f')} ({m[f'setting_at_{t}']})"
                                 if m[f"qps_at_{t}"] is not None else "not reached" for t in TARGETS)]
                 for m in matched])
    path = write_result("peers", {
        "n": args.n, "dim": args.dim, "queries": args.queries, "k": K, "metric": "cosine",
        "filter": {"bucket": BUCKET}, "filter_matches": len(data.selected),
        "installed": installed, "rows": rows, "matched_recall": matched,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
