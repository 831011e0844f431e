"""Request metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

``prometheus_client`` would do the same for one more dependency; the server needs three
series only: a counter of requests by method, route and status, a histogram of their latency
by route, and a gauge of items per collection (read from the stores at scrape time). Routes
are labelled by their template (``/api/collections/{name}/search``), never by the raw path,
so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a cached lexical hit (a millisecond) to a large batch encoded on a CPU.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"  # the route label of requests no route matched (404s)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last: +Inf only
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """Counters and histograms, updated by the request middleware (on the event loop) and read
    by ``GET /metrics`` (in a worker thread): one lock keeps a scrape consistent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault(route, _Histogram()).observe(seconds)

    def requests(self, route: str, status: int | None = None) -> int:
        """How many requests of ``route`` (with ``status``) were answered: for tests and logs."""
        with self._lock:
            return sum(n for (_, r, s), n in self._requests.items() if r == route and status in (None, int(s)))

    def render(self, items: Iterable[tuple[str, int]]) -> str:
        """The exposition text; ``items`` gives ``(collection, item count)`` pairs."""
        out = [
            "# HELP latentsearch_http_requests_total HTTP requests answered, by method, route template and status.",
            "# TYPE latentsearch_http_requests_total counter",
        ]
        with self._lock:
            requests = sorted(self._requests.items())
            latency = {route: (list(h.counts), h.total, h.n) for route, h in sorted(self._latency.items())}
        for (method, route, status), n in requests:
            out.append(f"latentsearch_http_requests_total{_labels(method=method, route=route, status=status)} {n}")
        out += [
            "# HELP latentsearch_http_request_duration_seconds Time from a request's arrival to the end of its answer.",
            "# TYPE latentsearch_http_request_duration_seconds histogram",
        ]
        for route, (counts, total, n) in latency.items():
            cumulative = 0
            for bound, count in zip((*BUCKETS, None), counts):
                cumulative += count
                le = "+Inf" if bound is None else _number(bound)
                out.append(f"latentsearch_http_request_duration_seconds_bucket{_labels(route=route, le=le)} {cumulative}")
            out.append(f"latentsearch_http_request_duration_seconds_sum{_labels(route=route)} {_number(total)}")
            out.append(f"latentsearch_http_request_duration_seconds_count{_labels(route=route)} {n}")
        out += [
            "# HELP latentsearch_collection_items Items stored in each served collection.",
            "# TYPE latentsearch_collection_items gauge",
        ]
        out += [f"latentsearch_collection_items{_labels(collection=name)} {n}" for name, n in items]
        return "\n".join(out) + "\n"


def _labels(**labels: str) -> str:
    """``{a="x",b="y"}`` with backslash, double quote and newline escaped as the format requires."""
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(x: float) -> str:
    return repr(float(x)) if x != int(x) else f"{x:.1f}"
