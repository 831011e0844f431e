"""Index specs: parsing our ``?option`` suffix, choosing a concrete spec for ``auto``, and
checking FAISS factory strings before FAISS sees them (:func:`check_factory`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import InvalidInputError, UnknownSpecError, unknown_name

SEARCH_OPTIONS = ("nprobe", "efSearch")
# rescore=R: ask the index for R x k candidates and re-rank them by their stored float vectors
# recall=R: tune efSearch/nprobe to recall@10 >= R (tuning.py); on_disk=true: IVF lists in a
# memory-mapped file beside the snapshot, built in shards (ondisk.py)
SPEC_OPTIONS = (*SEARCH_OPTIONS, "rescore", "recall", "on_disk")
MAX_RESCORE = 100  # candidates per result: beyond this an exact search reads less
DEFAULT_AUTO_RECALL = 0.95  # the recall target of ``auto`` without one of its own
# FAISS builds HNSW graphs with a candidate list of 40; 80 costs ~1.4x the build time and gives a
# graph in which efSearch 64 reaches the recall that efSearch 128 reached (benchmarks/peers.py).
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128  # FAISS's 16 loses recall quietly; 128 keeps recall@10 near 0.99 on typical data
AUTO_FLAT_LIMIT = 100_000  # exact search stays fast enough below this many vectors
AUTO_HNSW_BYTES = 8 << 30  # above this much raw vector data, compress with IVF-PQ

# Bounds on the numbers in a spec: FAISS accepts values outside them and then aborts the process
# (HNSW0, PQ8x0), hangs, or exhausts memory; every one is refused by check_factory first.
MAX_SEARCH_OPTION = 1 << 20  # efSearch, nprobe: FAISS holds them in a C int; deeper is pointless
MAX_NLIST = 1 << 20  # IVF lists (training needs 39 vectors per list)
HNSW_M = (2, 256)  # HNSW neighbours per node: 0 and 1 crash FAISS; each costs 8 bytes per vector
MAX_PQ_BITS = 16  # bits per PQ code (training needs 39 << nbits vectors)
MAX_ADDITIVE_BITS = {"RQ": 12, "PRQ": 12, "LSQ": 8, "PLSQ": 8}  # LSQ's tables grow as 4**nbits
MAX_TRANSFORM_DIM = 1 << 16
SPEC_HELP = "use e.g. Flat, HNSW32, IVF1024,Flat, IVF1024,PQ16, OPQ16,IVF1024,PQ16 or auto"


@dataclass(frozen=True)
class IndexSpec:
    """A FAISS factory string plus latentsearch's search-time options.

    ``IVF1024,Flat?nprobe=32`` or ``HNSW32?efSearch=256``; ``auto`` picks by size.
    ``HNSW32?recall=0.95``: the writes that build or double the index tune efSearch (nprobe for
    IVF) to the smallest value that reaches recall@10 0.95 (see :mod:`.tuning`); an explicit
    ``efSearch``/``nprobe`` fixes the value instead, and giving both is an error.
    ``IVF1024,PQ32?on_disk=true``: the inverted lists live in a memory-mapped file beside the
    snapshot (:mod:`.ondisk`); IVF specs only, and not with ``recall=`` (tuning builds a second
    copy of the index in memory).
    """

    factory: str
    search: dict[str, int] = field(default_factory=dict)
    recall: float | None = None
    on_disk: bool = False

    @classmethod
    def parse(cls, text: str) -> IndexSpec:
        factory, _, query = text.strip().partition("?")
        factory = factory.strip()
        if not factory:
            raise InvalidInputError("an empty index spec; use e.g. Flat, HNSW32, IVF1024,Flat or auto")
        search: dict[str, int] = {}
        recall: float | None = None
        on_disk = False
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key not in SPEC_OPTIONS:
                raise unknown_name("index search option", key, SPEC_OPTIONS)
            if key == "on_disk":
                on_disk = _flag(key, value)
                continue
            if key == "recall":
                recall = _recall(value)
                continue
            if key == "rescore":
                search[key] = _rescore(value)
                continue
            try:
                search[key] = int(value)
            except ValueError:
                raise InvalidInputError(f"index option {key}={value!r} is not an integer") from None
            if search[key] <= 0:
                raise InvalidInputError(f"index option {key} must be positive, got {value}")
            if search[key] > MAX_SEARCH_OPTION:
                raise InvalidInputError(
                    f"index option {key}={value} is too large; give at most {MAX_SEARCH_OPTION} "
                    f"(a larger {key} searches no deeper than the whole index)"
                )
        depth = sorted(k for k in search if k != "rescore")
        if recall is not None and depth:
            raise InvalidInputError(
                f"index spec {text.strip()!r} gives both recall= and {'/'.join(depth)}=: "
                "recall= tunes them; give one or the other"
            )
        if factory.lower() == "auto":
            factory = "auto"
        elif factory.lower() == "binary" or factory.lower().startswith("binary,"):
            factory = "binary" + factory[len("binary"):]
        if on_disk:
            check_on_disk(factory, recall)
        return cls(factory=factory, search=search, recall=recall, on_disk=on_disk)

    @property
    def is_auto(self) -> bool:
        return self.factory == "auto"

    @property
    def target(self) -> float | None:
        """The recall@10 the index is tuned to: ``recall=``, else :data:`DEFAULT_AUTO_RECALL`
        for ``auto`` without explicit search options, else None (no tuning)."""
        if self.recall is not None:
            return self.recall
        return DEFAULT_AUTO_RECALL if self.is_auto and not self.depth_options else None

    @property
    def depth_options(self) -> dict[str, int]:
        """The options that set how deep the index searches (efSearch, nprobe): those a recall
        target tunes; ``rescore`` is not one of them."""
        return {k: v for k, v in self.search.items() if k != "rescore"}

    @property
    def rescore(self) -> int:
        """Candidates per result re-ranked by the stored vectors (1: none)."""
        return self.search.get("rescore", 1)

    def __str__(self) -> str:
        options = [f"{k}={v}" for k, v in sorted(self.search.items())]
        options += [f"recall={self.recall!r}"] if self.recall is not None else []
        options += ["on_disk=true"] if self.on_disk else []
        return self.factory + (f"?{'&'.join(options)}" if options else "")


def with_on_disk(spec: str) -> str:
    """``spec`` with ``on_disk=true`` (checked: an IVF spec without ``recall=``)."""
    parsed = IndexSpec.parse(spec)
    if not parsed.on_disk:
        check_on_disk(parsed.factory, parsed.recall)
    return str(IndexSpec(parsed.factory, parsed.search, parsed.recall, on_disk=True))


def check_on_disk(factory: str, recall: float | None) -> None:
    """Refuse ``on_disk=true`` where it cannot work: only an IVF index has inverted lists to put
    on disk, fast-scan PQ keeps them in blocks FAISS cannot memory-map, and tuning a recall
    target builds a second, in-memory copy of the index."""
    shown = factory if len(factory) <= 60 else factory[:57] + "…"
    parts = split_parts(factory) if factory not in ("auto",) and not is_binary(factory) else []
    if not any(_IVF.fullmatch(p) for p in parts):
        raise InvalidInputError(
            f"an on-disk index needs an IVF spec, and {shown!r} is not one: only the inverted lists of an "
            "IVF index go to disk; use e.g. IVF1024,PQ32 or IVF4096,SQ8"
        )
    fast = [p for p in parts if (m := _PQ.fullmatch(p)) and m[3]]
    if fast:
        raise InvalidInputError(
            f"index spec {shown!r}: fast-scan PQ ({fast[0]}) cannot be memory-mapped from disk; use e.g. "
            f"{fast[0].split('x')[0]} (8-bit codes) for an on-disk index"
        )
    if recall is not None:
        raise InvalidInputError(
            f"index spec {shown!r}: recall= cannot be tuned for an on-disk index (the tuning builds a second "
            "copy in memory); give nprobe= instead"
        )


def _flag(key: str, value: str) -> bool:
    """A boolean spec option: true/false, 1/0, yes/no."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    shown = value if len(value) <= 32 else value[:29] + "…"
    raise InvalidInputError(f"index option {key}={shown!r} must be true or false")


def _recall(value: str) -> float:
    """A ``recall=`` value: a number strictly between 0 and 1."""
    try:
        recall = float(value) if len(value) <= 32 else math.nan
    except ValueError:
        recall = math.nan
    if not 0.0 < recall < 1.0:  # NaN fails too
        shown = value if len(value) <= 32 else value[:29] + "…"
        raise InvalidInputError(
            f"index option recall={shown!r} must be a number between 0 and 1 (exclusive), e.g. recall=0.95"
        )
    return recall


def _rescore(value: str) -> int:
    """A ``rescore=`` value: an integer from 1 to :data:`MAX_RESCORE`."""
    shown = value if len(value) <= 32 else value[:29] + "…"
    try:
        factor = int(value) if len(value) <= 18 else MAX_RESCORE + 1
    except ValueError:
        raise InvalidInputError(
            f"index option rescore={shown!r} is not an integer; give e.g. rescore=4 (4 x k candidates "
            "re-ranked by the stored vectors)"
        ) from None
    if not 1 <= factor <= MAX_RESCORE:
        raise InvalidInputError(
            f"index option rescore={shown} must be from 1 to {MAX_RESCORE} (candidates per result "
            "re-ranked by the stored vectors; 1 re-ranks only the k results)"
        )
    return factor


def choose_auto(n: int, dim: int) -> str:
    """The factory string ``auto`` means for ``n`` vectors of dimension ``dim``.

    Exact search while small (no recall lost); HNSW while the raw vectors fit comfortably in
    memory; IVF-PQ beyond that, with about 4·√n lists and 8-bit codes of dim/4 bytes.
    """
    if n < AUTO_FLAT_LIMIT:
        return "Flat"
    if n * dim * 4 <= AUTO_HNSW_BYTES:
        return "HNSW32"
    m = next(m for m in (dim // 4, dim // 8, dim // 16, 1) if m >= 1 and dim % m == 0)
    return f"IVF{auto_nlist(n)},PQ{m}"


def auto_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: about 4·√n, a power of two, at least 16."""
    return 1 << max(4, round(math.log2(4 * math.sqrt(n))))


def auto_candidates(n: int, dim: int) -> list[str]:
    """The index types ``auto`` tunes for ``n`` vectors, its size-based choice first: where HNSW
    fits, IVF over the same float vectors fits too (and on clustered data it is often faster at
    the same recall), so both are tuned and the faster kept; otherwise the one choice."""
    choice = choose_auto(n, dim)
    trainable = 1 << max(4, (n // 40).bit_length() - 1)  # FAISS wants 39 vectors per list to train
    return [choice, f"IVF{min(auto_nlist(n), trainable)},Flat"] if choice.startswith("HNSW") else [choice]


# -- checking factory strings ---------------------------------------------------------------------


def check_factory(factory: str, dim: int) -> None:
    """Refuse a FAISS factory string whose numbers FAISS would accept and then crash, hang or
    run out of memory on (``HNSW0``, ``IVF0,Flat``, ``PQ8x0``, ``PQ7`` on dimension 16,
    ``OPQ0,IVF4,PQ4``, ``NSG32``), with an :class:`UnknownSpecError` naming the part and what
    to write instead. Parts without numbers that latentsearch does not know (``LSH``, ``RaBitQ``)
    are left to FAISS, which refuses unknown names itself."""
    if not isinstance(factory, str) or not factory.strip():
        raise UnknownSpecError(f"an empty index spec; {SPEC_HELP}")
    if is_binary(factory):
        binary_hnsw(factory, dim)
        return
    _Checker(factory, dim).check(factory, dim)


def is_binary(factory: str) -> bool:
    """Whether ``factory`` names a binary index (``binary``, ``binary,HNSW32``)."""
    return factory == "binary" or factory.startswith("binary,")


LOSSY_CODES = ("SQ", "PQ", "RQ", "LSQ", "PRQ", "PLSQ", "LSH", "RaBitQ")


def is_lossy(factory: str) -> bool:
    """Whether ``factory`` keeps compressed codes rather than the vectors (scalar, product or
    additive quantisation, binary codes): its distances are approximate, and ``rescore=`` pays."""
    return is_binary(factory) or any(part.strip().startswith(LOSSY_CODES) for part in factory.split(","))


def binary_hnsw(factory: str, dim: int) -> int:
    """Check a binary spec for ``dim``: ``binary`` (exhaustive hamming search; returns 0) or
    ``binary,HNSW<M>`` (a hamming HNSW graph; returns M)."""
    shown = factory if len(factory) <= 60 else factory[:57] + "…"
    if dim % 8:
        raise UnknownSpecError(
            f"index spec {shown!r}: binary codes pack the sign of each dimension into bytes, so the "
            f"dimension must be a multiple of 8, not {dim}; use SQ8 or PQ for this encoder instead"
        )
    rest = factory[len("binary"):].lstrip(",").strip()
    if not rest:
        return 0
    m = _HNSW.fullmatch(rest)
    if m is None or m[2] is not None:
        raise UnknownSpecError(f"index spec {shown!r}: a binary index is binary or binary,HNSW32")
    n = int(m[1]) if len(m[1]) <= 18 else HNSW_M[1] + 1
    if not HNSW_M[0] <= n <= HNSW_M[1]:
        raise UnknownSpecError(
            f"index spec {shown!r} asks for {m[1][:20]} neighbours per node, but {HNSW_M[0]} to {HNSW_M[1]} "
            "are possible; write e.g. binary,HNSW32"
        )
    return n


def split_parts(factory: str) -> list[str]:
    """The comma-separated parts of a factory string, commas inside parentheses kept."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(factory):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            break
        if ch == "," and depth == 0:
            parts.append(factory[start:i].strip())
            start = i + 1
    if depth != 0:
        shown = factory if len(factory) <= 60 else factory[:57] + "…"
        raise UnknownSpecError(f"index spec {shown!r} has unbalanced parentheses; {SPEC_HELP}")
    return parts + [factory[start:].strip()]


_PCA = re.compile(r"PCAW?R?(\d+)")
_OPQ = re.compile(r"OPQ(\d+)(?:_(\d+))?")
_RR = re.compile(r"(RR|ITQ|Pad)(\d+)")
_IVF = re.compile(r"IVF(\d+)(?:_(\w+?))?(?:\((.*)\))?")
_IMI = re.compile(r"IMI2x(\d+)")
_HNSW = re.compile(r"HNSW(\d+)(?:_(.+))?")
_PQ = re.compile(r"PQ(\d+)(?:x(\d+))?(fs|fsr|np)?")
_SQ = re.compile(r"SQ(\w*)")
_ADDITIVE = re.compile(r"(PRQ|PLSQ|RQ|LSQ)(\d+)x(\d+)(?:x(\d+))?(?:_\w+)?")
_REFINE = re.compile(r"Refine\((.*)\)")
SQ_TYPES = ("4", "6", "8", "fp16", "bf16", "8_direct", "8_direct_signed", "6_direct")


class _Checker:
    def __init__(self, factory: str, dim: int):
        self.factory, self.dim = factory, dim

    def fail(self, problem: str, fix: str = SPEC_HELP) -> UnknownSpecError:
        shown = self.factory if len(self.factory) <= 60 else self.factory[:57] + "…"
        return UnknownSpecError(f"index spec {shown!r} for dimension {self.dim}: {problem}; {fix}")

    def number(self, part: str, what: str, value: str, low: int, high: int, example: str) -> int:
        """``value`` as an int in ``[low, high]``, or an error saying what to write (e.g. ``example``)."""
        n = int(value) if len(value) <= 18 else high + 1  # no 5,000-digit int() conversions
        if not low <= n <= high:
            shown = str(n) if len(value) <= 18 else f"a {len(value)}-digit number of"
            part = part if len(part) <= 30 else part[:27] + "…"
            raise self.fail(f"{part!r} asks for {shown} {what}, but {low} to {high} are possible", f"write e.g. {example}")
        return n

    def check(self, factory: str, d: int) -> None:
        parts = split_parts(factory)
        refined = any(p == "RFlat" or p.startswith("Refine(") for p in parts)
        for part in parts:
            if not part:
                raise self.fail("it has an empty part between commas")
            if part.startswith("IVF") and refined:
                raise self.fail(
                    "an IVF index wrapped in RFlat or Refine() cannot take the store's ids",
                    "drop the refinement (IVF1024,PQ16) or refine a non-IVF index (PQ16,RFlat)",
                )
            d = self.part(part, d)

    def part(self, part: str, d: int) -> int:
        """Check one part for vectors of dimension ``d``; returns the dimension after it."""
        if part == "L2norm":  # a digit, no number
            return d
        if part in ("IDMap", "IDMap2"):
            rest = ",".join(p for p in split_parts(self.factory) if p != part) or "Flat"
            raise self.fail(f"latentsearch gives every index the store's ids itself, so {part} is not needed",
                            f"drop it: {rest}")
        if part.startswith("NSG") or "_NSG" in part:
            raise self.fail("NSG graphs cannot add vectors once built, and a collection grows",
                            "use an HNSW graph such as HNSW32 instead")
        if m := _PCA.fullmatch(part):
            return self.number(part, "output dimensions", m[1], 1, d, f"PCA{max(1, d // 2)}")
        if m := _OPQ.fullmatch(part):
            out = self.number(part, "output dimensions", m[2], 1, MAX_TRANSFORM_DIM, f"OPQ16_{d}") if m[2] else d
            sub = self.number(part, "sub-quantizers", m[1], 1, out, f"OPQ{_divisor_near(out, 16)}")
            if out % sub:
                raise self.fail(f"{part} splits {out} dimensions into {sub} sub-quantizers, which does not divide",
                                f"give OPQ a divisor of {out}, e.g. OPQ{_divisor_near(out, sub)}")
            return out
        if m := _RR.fullmatch(part):
            low, high = (d, MAX_TRANSFORM_DIM) if m[1] == "Pad" else (1, d if m[1] == "ITQ" else MAX_TRANSFORM_DIM)
            return self.number(part, "output dimensions", m[2], low, high, f"{m[1]}{d}")
        if m := _IVF.fullmatch(part):
            self.number(part, "lists", m[1], 1, MAX_NLIST, "IVF1024")
            if m[2] is not None:
                hnsw = re.fullmatch(r"HNSW(\d+)", m[2])
                if not hnsw:
                    raise self.fail(f"{part} has an unknown coarse quantizer {m[2]!r}", "write IVF1024 or IVF1024_HNSW32")
                self.number(part, "HNSW neighbours per node", hnsw[1], *HNSW_M, f"IVF{m[1]}_HNSW32")
            if m[3] is not None:
                self.check(m[3], d)
            return d
        if m := _IMI.fullmatch(part):
            self.number(part, "bits per half", m[1], 1, 10, "IMI2x8")
            return d
        if m := _HNSW.fullmatch(part):
            self.number(part, "neighbours per node", m[1], *HNSW_M, "HNSW32")
            if m[2] is not None and m[2] != "Flat":
                self.part(m[2], d)
            return d
        if m := _PQ.fullmatch(part):
            sub = self.number(part, "sub-quantizers", m[1], 1, d, f"PQ{_divisor_near(d, d // 4)}")
            if d % sub:
                raise self.fail(f"{part} splits {d} dimensions into {sub} sub-quantizers, which does not divide",
                                f"give PQ a divisor of {d}, e.g. PQ{_divisor_near(d, sub)}")
            nbits = self.number(part, "bits per code", m[2], 1, MAX_PQ_BITS, f"PQ{sub}x8") if m[2] else 8
            if m[3] in ("fs", "fsr") and nbits != 4:
                raise self.fail(f"fast-scan PQ ({part}) takes 4-bit codes", f"write PQ{sub}x4{m[3]}")
            return d
        if m := _ADDITIVE.fullmatch(part):
            kind, numbers = m[1], [n for n in m.groups()[1:4] if n is not None]
            if kind in ("PRQ", "PLSQ") and len(numbers) == 3:
                splits = self.number(part, "splits", numbers[0], 1, d, f"{kind}2x4x8")
                if d % splits:
                    raise self.fail(f"{part} splits {d} dimensions into {splits} parts, which does not divide",
                                    f"give {kind} a divisor of {d}, e.g. {kind}{_divisor_near(d, splits)}x4x8")
                numbers = numbers[1:]
            if len(numbers) != 2:
                raise self.fail(f"{part} is not {kind}{{codebooks}}x{{bits}}", f"write e.g. {kind}8x8")
            self.number(part, "codebooks", numbers[0], 1, 64, f"{kind}8x8")
            self.number(part, "bits per code", numbers[1], 1, MAX_ADDITIVE_BITS[kind], f"{kind}{numbers[0]}x8")
            return d
        if m := _SQ.fullmatch(part):
            if m[1] not in SQ_TYPES:
                raise self.fail(f"{part} is not a scalar quantizer FAISS has", "write SQ8, SQ4, SQ6, SQfp16 or SQbf16")
            return d
        if m := _REFINE.fullmatch(part):
            self.check(m[1], d)
            return d
        if any(ch.isdigit() for ch in part):
            raise self.fail(f"latentsearch cannot check the part {part[:30]!r}")
        return d  # a name without numbers (Flat, LSH, RFlat, L2norm): FAISS judges it


def _divisor_near(n: int, want: int) -> int:
    """The divisor of ``n`` closest to ``want`` (for suggestions)."""
    return min((x for x in range(1, n + 1) if n % x == 0), key=lambda x: (abs(x - want), x))
