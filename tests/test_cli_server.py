"""``latentsearch search`` through a running server (a collection URL, or NAME with --server):
the same output as the local search, every search option, the errors (token, unknown collection,
no server), and no model, FAISS or database library loaded. One real ``latentsearch serve``
process, with a read token, serves a text and an image collection for the whole module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from latentsearch.cli import cli  # noqa: E402
from helpers import assert_one_line_error, write_jsonl, write_random_pictures  # noqa: E402
from serving import free_port, running  # noqa: E402

READ = "read-t0ken"
ENC = "hashing:64"
HEAVY = ("torch", "faiss", "sqlalchemy", "sentence_transformers", "transformers", "timm", "fastapi", "uvicorn")
TOPICS = {
    "ships": "ship sea sail boat hull float harbour",
    "cats": "cat kitten purr whiskers mouse nap",
    "bread": "bread yeast dough oven flour crust",
}


def run(*args: object, token: str | None = READ) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env={"LATENTSEARCH_TOKEN": token, "COLUMNS": "120"})


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.output
    return result.stdout


class Served:
    def __init__(self, url: str, notes: Path, pics: Path, query_image: Path):
        self.url, self.notes, self.pics, self.query_image = url, notes, pics, query_image


def make_collections(root: Path) -> tuple[Path, Path, Path]:
    """``notes``: 30 records in three topics, some long enough to be split into passages;
    ``pics``: three random images, and a query image with the pixels of one of them."""
    records = []
    for i in range(30):
        topic = list(TOPICS)[i % 3]
        words = TOPICS[topic].split()
        length = 14 if i % 5 == 0 else 5  # every fifth record is split into passages
        text = " ".join(words[(i + j) % len(words)] for j in range(length)) + f" note{i}"
        records.append({"id": f"n{i}", "text": text, "topic": topic, "n": i})
    data = write_jsonl(root / "notes.jsonl", records)
    ok(run("index", root / "notes", data, "--encoder", ENC, "--max-tokens", 8, "--overlap", 0, "-q"))
    folder, query = write_random_pictures(root / "images", root / "query.bmp")
    ok(run("index", root / "pics", folder, "--encoder", ENC, "-q"))
    return root / "notes", root / "pics", query


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    notes, pics, query = make_collections(root)
    with running([notes, pics], root / "server.log", "--read-token", READ, "--log-level", "warning") as server:
        yield Served(server.url, notes, pics, query)


def both(served: Served, *args: object) -> tuple[str, str, str]:
    """The stdout of the local search, of the search by URL and of the search with --server."""
    local = ok(run("search", served.notes, *args))
    by_url = ok(run("search", f"{served.url}/notes", *args))
    by_server = ok(run("search", "notes", *args, "--server", served.url))
    return local, by_url, by_server


@pytest.mark.parametrize(
    "args",
    [
        ("ship sea",),
        ("ship sea", "--json"),
        ("cat purr", "-k", 3, "--json"),
        ("ship", "--where", '{"topic": "cats"}', "--json"),
        ("bread yeast", "--where", '{"n": {"$gte": 20}}', "-k", 4),
        ("harbour", "--mode", "lexical", "--json"),
        ("harbour kitten", "--mode", "hybrid", "-k", 5),
        ("ship sail", "--documents", "--json"),
    ],
    ids=["table", "json", "k", "where", "where-table", "lexical", "hybrid", "documents"],
)
def test_the_same_output_as_the_local_search(served, args):
    local, by_url, by_server = both(served, *args)
    assert local.strip()
    assert by_url == local
    assert by_server == local


def test_options_take_effect_remotely(served):
    url = f"{served.url}/notes"
    assert len(json.loads(ok(run("search", url, "ship", "-k", 3, "--json")))) == 3
    cats = json.loads(ok(run("search", url, "ship", "--where", '{"topic": "cats"}', "--json")))
    assert cats and {h["metadata"]["topic"] for h in cats} == {"cats"}
    assert json.loads(ok(run("search", url, "xylophone", "--mode", "lexical", "--json"))) == []
    passages = json.loads(ok(run("search", url, "ship sail sea", "-k", 30, "--json")))
    documents = json.loads(ok(run("search", url, "ship sail sea", "-k", 30, "--documents", "--json")))
    assert len({h["document"] for h in passages}) < len(passages)  # a document with several passages
    assert len({h["document"] for h in documents}) == len(documents)


def test_filter_messages_are_the_same(served):
    args = ("ship", "--where", '{"topic": "none"}')
    local = run("search", served.notes, *args)
    remote = run("search", f"{served.url}/notes", *args)
    assert ok(remote) == ok(local)
    assert remote.stderr == local.stderr
    assert "no item matches the filter" in remote.stderr


def test_image_search_through_the_server(served):
    local = json.loads(ok(run("search", served.pics, "--image", served.query_image, "-k", 3, "--json")))
    remote = json.loads(ok(run("search", f"{served.url}/pics", "--image", served.query_image, "-k", 3, "--json")))
    assert remote == local
    assert remote[0]["source"].endswith("p1.png") and remote[0]["score"] == pytest.approx(1.0, abs=1e-5)
    table = ok(run("search", "pics", "--image", served.query_image, "-k", 1, "--server", served.url))
    assert table == ok(run("search", served.pics, "--image", served.query_image, "-k", 1))
    args = ("--image", served.query_image, "--where", '{"modality": "text"}')  # the filter's stats come back
    local_filtered, remote_filtered = run("search", served.pics, *args), run("search", f"{served.url}/pics", *args)
    assert (ok(remote_filtered), remote_filtered.stderr) == (ok(local_filtered), local_filtered.stderr)
    assert "no item matches the filter" in remote_filtered.stderr


def test_a_url_with_a_trailing_slash_or_the_api_path(served):
    expected = ok(run("search", f"{served.url}/notes", "ship", "--json"))
    assert ok(run("search", f"{served.url}/notes/", "ship", "--json")) == expected
    assert ok(run("search", f"{served.url}/api/collections/notes", "ship", "--json")) == expected
    assert ok(run("search", "notes", "ship", "--json", "--server", served.url + "/")) == expected


def test_a_token_from_the_option(served):
    result = run("search", f"{served.url}/notes", "ship", "--json", "--token", READ, token=None)
    assert json.loads(ok(result))


def test_no_token_names_the_option_and_the_variable(served):
    error = assert_one_line_error(run("search", f"{served.url}/notes", "ship", token=None), "needs a token", code=1)
    assert "--token" in error and "LATENTSEARCH_TOKEN" in error and served.url in error


def test_a_wrong_token_names_the_option_and_the_variable(served):
    result = run("search", "notes", "ship", "--server", served.url, token="wrong")
    error = assert_one_line_error(result, "refused the token", code=1)
    assert "--token" in error and "LATENTSEARCH_TOKEN" in error


def test_an_unknown_collection_is_the_servers_404(served):
    error = assert_one_line_error(run("search", f"{served.url}/papers", "ship"), "no collection named 'papers'", code=1)
    assert "notes, pics" in error  # what the server does serve


def test_an_unreachable_server():
    url = f"http://127.0.0.1:{free_port()}"
    error = assert_one_line_error(run("search", f"{url}/notes", "ship"), "cannot reach", code=1)
    assert url in error and "latentsearch serve" in error
    assert_one_line_error(run("search", "notes", "ship", "--server", url), "cannot reach", url, code=1)


def test_bad_input_is_the_servers_message(served):
    assert_one_line_error(run("search", f"{served.url}/notes", "ship", "--where", '{"$bogus": 1}'), code=1)


def test_usage_errors(served, tmp_path):
    url = f"{served.url}/notes"
    assert_one_line_error(run("search", url, "ship", "--server", served.url), "either the URL or --server", code=2)
    assert_one_line_error(run("search", served.url, "ship"), "names no collection", code=2)
    assert_one_line_error(run("search", "notes", "ship", "--server", "127.0.0.1:8000"), "--server is not a URL", code=2)
    assert_one_line_error(run("search", "some/notes", "ship", "--server", served.url), "not a path", code=2)
    assert_one_line_error(run("search", url + "?k=3", "ship"), "COLLECTION is not a URL", code=2)
    assert_one_line_error(run("search", "http://127.0.0.1:99999/notes", "ship"), "COLLECTION is not a URL", code=2)
    assert_one_line_error(run("search", "notes", "ship", "--server", "http://:8000"), "--server is not a URL", code=2)
    assert_one_line_error(run("search", served.notes, "ship", "--token", READ), "--token is for", code=2)


def test_a_local_collection_still_needs_its_folder(tmp_path):
    assert_one_line_error(run("search", tmp_path / "missing", "ship"), "no collection at", code=1)
    (tmp_path / "file").write_text("x")
    assert run("search", tmp_path / "file", "ship").exit_code == 2  # click's "is a file"


def test_a_search_through_the_server_loads_nothing_heavy(served):
    code = (
        "import sys\n"
        "from latentsearch.cli import cli\n"
        f"cli(['search', {served.url + '/notes'!r}, 'ship sea', '--json'], standalone_mode=False)\n"
        f"cli(['search', 'pics', '--image', {str(served.query_image)!r}, '--server', {served.url!r}, '--json'], standalone_mode=False)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "LATENTSEARCH_TOKEN": READ}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    assert '"score"' in done.stdout
