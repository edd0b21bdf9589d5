"""Shared fixtures, and the layout rule of the tests (docs/architecture.md, "Testing").

Unit tests use a local fake OpenAI-compatible endpoint (a real HTTP server on 127.0.0.1, written by
us in benchmarks/fake_endpoint.py); integration tests start real `transformers serve`, Argilla,
axolotl, a Ray cluster, a browser. A test is an integration test exactly when it lives in
tests/integration/: the hook below marks those and refuses the marker anywhere else. Helpers are
plain modules imported by their full name (`from tests.support import ...`,
`from tests.review.records import ...`); a conftest.py holds fixtures and hooks only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = Path(__file__).resolve().parent / "integration"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def endpoint():
    """A fast local OpenAI-compatible endpoint (10-20 ms latency, 64 slots, logprobs)."""
    from benchmarks.fake_endpoint import EndpointThread

    with EndpointThread(latency=(0.01, 0.02)) as ep:
        yield ep


@pytest.fixture
def write_yaml(tmp_path):
    def _write(text: str, name: str = "pipeline.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config, items):
    misplaced = []
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("integration") is not None:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "integration tests live in tests/integration/ (they are marked there by tests/conftest.py); "
            f"move these or drop their marker: {', '.join(misplaced[:5])}"
            + (f" and {len(misplaced) - 5} more" if len(misplaced) > 5 else "")
        )
