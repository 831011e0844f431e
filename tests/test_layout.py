"""The shape of the code that the design promises: parts with explicit collaborators (nothing
under ingest/ or query/ reaches back to the Collection façade), small modules, and an import
of the package that loads no heavy library."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "latentsearch"
MAX_LINES = 430  # "no module over ~400 lines", with a little slack


def test_ingest_and_query_never_import_the_collection():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for folder in ("ingest", "query")
        for path in (PACKAGE / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"collection import|from \.\.collection", line)
    ]
    assert offenders == []


def test_no_module_is_a_god_module():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_importing_the_package_loads_no_heavy_library():
    code = "import sys, latentsearch, latentsearch.collection; print(sorted(m for m in ('torch', 'faiss', 'timm', 'sentence_transformers', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
