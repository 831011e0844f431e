"""Shared fixtures: the test PostgreSQL server, a store URL on both databases, hashing collections.

PostgreSQL tests need the server at ``LATENTSEARCH_TEST_PG`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). When it cannot be reached they are
skipped, except under CI (``CI`` set to a true value), where they fail: CI must run them.

Subprocesses the tests start (the CLI, the benchmark scripts) import the same ``latentsearch``
as the tests do, even when another copy is installed: its checkout goes first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

import latentsearch

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_CHECKOUT = Path(latentsearch.__file__).resolve().parents[1]
if (_CHECKOUT / "pyproject.toml").exists():  # a source checkout, not site-packages
    os.environ["PYTHONPATH"] = os.pathsep.join([str(_CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])])


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _drop_schemas(url: str, schemas: list[str]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The SQLAlchemy URL of the test PostgreSQL database (env ``LATENTSEARCH_TEST_PG`` overrides).

    Checked once per session: an unreachable server skips the test, or fails it under CI.
    """
    url = os.environ.get("LATENTSEARCH_TEST_PG", DEFAULT_PG_URL)
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, ImportError) as exc:
        message = f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} is unreachable: {exc}"
        if _ci():
            pytest.fail(f"{message} (CI is set: PostgreSQL tests must run there)", pytrace=False)
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def pg_schema(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL schema names (``ls_test_<hex>``), one per call.

    The schemas are not created (``SqlStore.create`` does that); all of them are dropped, with
    whatever they hold, when the test ends. Calling it skips the test when PostgreSQL is down.
    """
    made: list[str] = []

    def new_schema() -> str:
        request.getfixturevalue("pg_url")
        made.append(f"ls_test_{secrets.token_hex(6)}")
        return made[-1]

    yield new_schema
    if made:
        _drop_schemas(request.getfixturevalue("pg_url"), made)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL, once per database: a fresh SQLite file in ``tmp_path``, then ``pg_url``.

    On PostgreSQL, pair it with ``store_schema`` so tests do not share tables.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store_schema(store_url: str, pg_schema: Callable[[], str]) -> str | None:
    """The schema to give ``SqlStore(store_url, ..., schema=...)``: None on SQLite, a fresh
    PostgreSQL schema (dropped after the test) on PostgreSQL."""
    return None if store_url.startswith("sqlite") else pg_schema()


@pytest.fixture
def hashing_collection(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A factory: ``hashing_collection(name="col", index="Flat", store=None, **options)`` creates a
    collection with ``encoder="hashing:64"`` in ``tmp_path / name`` (other ``Collection.create``
    options pass through). Every collection it made is closed after the test, and the PostgreSQL
    schema of any with an external store is dropped."""
    from latentsearch.collection import Collection

    made: list[Any] = []

    def create(name: str = "col", index: str = "Flat", store: str | None = None, **options: Any) -> Any:
        col = Collection.create(tmp_path / name, encoder="hashing:64", index=index, store=store, **options)
        made.append(col)
        return col

    yield create
    for col in made:
        try:
            col.close()
        finally:
            if col.config.store_url and col.config.store_schema:
                _drop_schemas(col.config.store_url, [col.config.store_schema])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster (2 CPUs), started once per test session; yields its address, which
    subprocesses join (``--ray ADDRESS``). Without Ray installed the test is skipped, except
    under CI, where it fails: the test extra installs Ray and CI must run these tests."""
    try:
        import ray
    except ImportError:
        if _ci():
            pytest.fail("Ray is not installed (CI is set: the distributed tests must run there)", pytrace=False)
        pytest.skip("Ray is not installed: pip install 'latentsearch[distributed]'")
    from latentsearch.distributed.cluster import connect

    connect("local", num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty ``LATENTSEARCH_CACHE`` folder for one test module (the ONNX exports' cache)."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("LATENTSEARCH_CACHE", str(folder))
        yield folder
