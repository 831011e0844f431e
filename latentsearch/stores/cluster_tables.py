"""The store's tables for the corpus clustering (see :mod:`latentsearch.query.corpus_clusters`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import CorruptCollectionError, LatentSearchError
from .bulk import chunks as _chunks
from .models import Assignment, ClusterBase, ClusterRow, Info
from .models import Item as ItemRow


class ClusterTablesMixin:
    """Clustering methods of :class:`~latentsearch.stores.sql.SqlStore`."""

    engine: Engine
    schema: str | None
    safe_url: str


    CLUSTERS_SEQ = "clusters_seq"  # info row: the change seq the assignments are up to date with

    def ensure_cluster_tables(self) -> None:
        """Create the clustering's tables if this store has none yet (older stores lack them)."""
        try:
            with self.engine.begin() as conn:
                ClusterBase.metadata.create_all(conn, checkfirst=True)
        except SQLAlchemyError as exc:
            raise LatentSearchError(f"cannot create the cluster tables in {self.safe_url}: {exc}") from exc

    def has_clusters(self) -> bool:
        """Whether a clustering is stored."""
        try:
            if not inspect(self.engine).has_table(ClusterRow.__tablename__, schema=self.schema):
                return False
            with Session(self.engine) as session:
                return session.scalar(select(ClusterRow.id).limit(1)) is not None
        except SQLAlchemyError as exc:
            raise CorruptCollectionError(f"cannot read the store at {self.safe_url}: {exc}") from exc

    def replace_clusters(
        self,
        clusters: Sequence[dict[str, Any]],
        item_ids: np.ndarray,
        cluster_ids: np.ndarray,
        seq: int,
    ) -> None:
        """Replace the stored clustering in one transaction: ``clusters`` rows (``id, label,
        size, centroid (d,), representatives``), every item's cluster, and the change seq the
        assignments reflect."""
        self.ensure_cluster_tables()
        with Session(self.engine) as session, session.begin():
            session.execute(delete(Assignment))
            session.execute(delete(ClusterRow))
            rows = [
                {**c, "centroid": np.asarray(c["centroid"], dtype=np.float32).tobytes(),
                 "representatives": [int(i) for i in c.get("representatives", [])]}
                for c in clusters
            ]
            if rows:
                session.connection().execute(ClusterRow.__table__.insert(), rows)
            pairs = list(zip(np.asarray(item_ids).tolist(), np.asarray(cluster_ids).tolist()))
            for chunk in _chunks(pairs):
                session.connection().execute(
                    Assignment.__table__.insert(), [{"item_id": i, "cluster_id": c} for i, c in chunk]
                )
            session.merge(Info(name=self.CLUSTERS_SEQ, value=str(int(seq))))

    def load_clusters(self) -> list[dict[str, Any]]:
        """The stored clusters by id (``id, label, size, centroid, representatives``); [] if none."""
        if not self.has_clusters():
            return []
        with Session(self.engine) as session:
            rows = session.execute(select(ClusterRow).order_by(ClusterRow.id)).scalars().all()
            return [
                {"id": r.id, "label": r.label, "size": int(r.size),
                 "centroid": np.frombuffer(r.centroid, dtype=np.float32).copy(),
                 "representatives": list(r.representatives or [])}
                for r in rows
            ]

    def clusters_seq(self) -> int:
        """The change seq the stored assignments are up to date with (0 when never clustered)."""
        with Session(self.engine) as session:
            value = session.scalar(select(Info.value).where(Info.name == self.CLUSTERS_SEQ))
        return int(value) if value else 0

    def update_assignments(self, assigned: dict[int, int], gone: Sequence[int], seq: int) -> None:
        """Set the cluster of ``assigned`` items (insert or replace), drop the rows of ``gone``
        ids and record ``seq``, in one transaction (sizes are recounted)."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        with Session(self.engine) as session, session.begin():
            for chunk in _chunks(list(gone)):
                session.execute(delete(Assignment).where(Assignment.item_id.in_(chunk)))
            for chunk in _chunks(list(assigned.items())):
                stmt = upsert(Assignment).values([{"item_id": i, "cluster_id": c} for i, c in chunk])
                session.execute(
                    stmt.on_conflict_do_update(index_elements=["item_id"], set_={"cluster_id": stmt.excluded.cluster_id})
                )
            sizes = dict(
                session.execute(select(Assignment.cluster_id, func.count()).group_by(Assignment.cluster_id)).all()
            )
            for cid in session.scalars(select(ClusterRow.id)).all():
                session.execute(
                    update(ClusterRow).where(ClusterRow.id == cid).values(size=int(sizes.get(cid, 0))),
                    execution_options={"synchronize_session": False},
                )
            session.merge(Info(name=self.CLUSTERS_SEQ, value=str(int(seq))))

    def cluster_item_ids(self, cluster_id: int, limit: int | None = None) -> list[int]:
        """Ids of the stored items in a cluster, in id order."""
        with Session(self.engine) as session:
            stmt = (
                select(Assignment.item_id)
                .join(ItemRow, ItemRow.id == Assignment.item_id)
                .where(Assignment.cluster_id == int(cluster_id))
                .order_by(Assignment.item_id)
            )
            if limit is not None:
                stmt = stmt.limit(int(limit))
            return [int(i) for i in session.scalars(stmt)]

    def assignments(self, ids: Sequence[int]) -> dict[int, int]:
        """``item_id -> cluster_id`` for the given ids that have a cluster."""
        out: dict[int, int] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                stmt = select(Assignment.item_id, Assignment.cluster_id).where(Assignment.item_id.in_(chunk))
                out.update({int(i): int(c) for i, c in session.execute(stmt)})
        return out
