"""Per-query search options: a query's own efSearch, nprobe or rescore, checked as a spec's are.
Imports nothing heavy (the HTTP client checks options with it before they leave)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError
from .selection import IndexSpec


def search_overrides(params: Mapping[str, Any] | str | None) -> dict[str, int]:
    """Per-query search options (``efSearch``, ``nprobe``, ``rescore``) from a mapping or a
    query string (``"efSearch=256&rescore=4"``), checked as an index spec's are."""
    if not params:
        return {}
    if isinstance(params, str):
        query = params.lstrip("?")
    elif isinstance(params, Mapping):
        query = "&".join(f"{k}={v}" for k, v in params.items())
    else:
        raise InvalidInputError(f"search params must be a mapping such as {{'efSearch': 256}}, not {type(params).__name__}")
    parsed = IndexSpec.parse(f"Flat?{query}")
    if parsed.recall is not None:
        raise InvalidInputError(
            "recall= is a target the index is tuned to when it is built; a query gives efSearch=, nprobe= or rescore="
        )
    return parsed.search
