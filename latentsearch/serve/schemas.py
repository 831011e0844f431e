"""Request and response bodies of the HTTP API, as pydantic models (they make the OpenAPI
schema at ``/docs``). Unknown fields are refused, so a misspelt option is an error rather than
silently ignored. Responses are documented with these models but built as plain dicts: a batch
search returns thousands of hits, and validating each again would cost more than the search."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VectorQuery(_Strict):
    """Search by a vector of the collection's dimension."""

    vector: list[float]


class IdQuery(_Strict):
    """More like this item (the item itself is left out of the hits)."""

    id: StrictInt


Query = Union[StrictStr, VectorQuery, IdQuery]


class SearchRequest(_Strict):
    """Give ``query`` (one; answered with ``hits``) or ``queries`` (a batch; ``results``)."""

    query: Optional[Query] = Field(None, examples=["why do boats float?"])
    queries: Optional[list[Query]] = None
    k: StrictInt = Field(10, ge=1, description="How many hits per query (at most the server's max_k).")
    where: Optional[dict[str, Any]] = Field(None, examples=[{"topic": {"$in": ["ships", "sea"]}}])
    mode: Literal["dense", "lexical", "hybrid"] = "dense"
    group_by: Optional[Literal["document"]] = None
    hybrid_weights: tuple[float, float] = (1.0, 1.0)
    params: Optional[dict[str, StrictInt]] = Field(
        None, description="The index's search options for this request: efSearch (HNSW), nprobe (IVF), rescore.",
        examples=[{"efSearch": 256}],
    )


class ClustersRequest(_Strict):
    query: Query
    k: StrictInt = Field(100, ge=2, description="Neighbours to group.")
    n_clusters: Optional[StrictInt] = Field(None, ge=1, description="How many clusters (default: chosen from the data).")
    where: Optional[dict[str, Any]] = None


class MapRequest(_Strict):
    query: Optional[Query] = Field(None, description="A query to place on the map: text, a vector or an item id.")
    ids: list[StrictInt] = Field([], description="Items to place on the map, e.g. a search's hits.")
    sample: StrictInt = Field(2000, ge=1, le=20_000, description="Items on the map at most (a seeded random sample).")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="Seed of the sample and of the quick k-means.")


class AddRequest(_Strict):
    """Give ``texts`` or ``vectors``. With ``keys`` the items are upserted: an existing key is
    replaced (keeping its id, and its metadata unless ``metadata`` is given), unless
    ``on_conflict`` is ``"error"`` (then an existing key fails the whole request, as ``add``)."""

    texts: Optional[list[StrictStr]] = None
    vectors: Optional[list[list[float]]] = None
    metadata: Optional[list[dict[str, Any]]] = None
    keys: Optional[list[StrictStr]] = None
    on_conflict: Literal["update", "error"] = "update"


class DeleteRequest(_Strict):
    ids: list[StrictInt] = []
    keys: list[StrictStr] = []


# -- responses (documentation only) -----------------------------------------------------------------


class FilterOut(BaseModel):
    matches: int
    strategy: str
    explanation: Optional[str]


class SearchResponse(BaseModel):
    hits: Optional[list[HitOut]] = None
    results: Optional[list[list[HitOut]]] = None
    filter: Optional[FilterOut] = None


class ItemOut(BaseModel):
    id: int
    key: Optional[str]
    source: Optional[str]
    modality: str
    text: Optional[str]
    metadata: dict[str, Any]
    document: Optional[str]


class HitOut(ItemOut):
    """An item and its score."""

    score: float


class IdsResponse(BaseModel):
    ids: list[int]


class DeleteResponse(BaseModel):
    deleted: int
    missing_ids: list[int]
    missing_keys: list[str]


class ErrorOut(BaseModel):
    error: str
    type: Optional[str] = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": why}
    for code, why in {
        400: "invalid input",
        401: "no token",
        403: "wrong token",
        404: "no such collection or item",
        409: "another process holds the collection's writer lock",
        413: "body or upload over the size limit",
        503: "still starting",
    }.items()
}
