"""Shared fixtures. Unit tests use a local fake OpenAI-compatible endpoint (a real HTTP server on
127.0.0.1, written by us in benchmarks/fake_endpoint.py); integration tests start real
`transformers serve`, Argilla and axolotl."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
