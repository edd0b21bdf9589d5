"""Connection failures name the cause and the fix, and never echo the API key."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from distillflow.cli import app
from distillflow.errors import ConfigurationError
from distillflow.review.connect import credentials, probe


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake_server():
    """A local HTTP server answering GET /api/v1/me with a scripted status."""
    answers = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answers["me"]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", answers
    srv.shutdown()


def test_missing_env_names_both_variables(monkeypatch):
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ARGILLA_API_URL and ARGILLA_API_KEY are not set.*review up"):
        credentials()


def test_unreachable_server():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConfigurationError, match=f"cannot reach Argilla at {url}.*distillflow review up"):
        probe(url, "secret-key", timeout=3)


def test_wrong_key_and_not_argilla(fake_server):
    url, answers = fake_server
    answers["me"] = (401, {"detail": "Could not validate credentials"})
    with pytest.raises(ConfigurationError, match="rejected the API key in ARGILLA_API_KEY") as e:
        probe(url, "secret-key")
    assert "secret-key" not in str(e.value)
    answers["me"] = (404, {"detail": "Not Found"})
    with pytest.raises(ConfigurationError, match="does not look like an Argilla 2.x server"):
        probe(url, "k")
    answers["me"] = (200, {"username": "argilla", "role": "owner"})
    assert probe(url, "k")["username"] == "argilla"


def test_cli_push_unreachable_exits_1_without_traceback(tmp_path, monkeypatch):
    from tests.review.records import SPEC_YAML, make_row
    from distillflow.engine.outputs import write_jsonl

    (tmp_path / "data").mkdir()
    (tmp_path / "pipeline.yaml").write_text(SPEC_YAML)
    write_jsonl(tmp_path / "data" / "curated.jsonl", [make_row(1)])
    monkeypatch.setenv("ARGILLA_API_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("ARGILLA_API_KEY", "secret-key")
    result = CliRunner().invoke(app, ["review", "push", str(tmp_path)])
    assert result.exit_code == 1
    out = result.output + (result.stderr if hasattr(result, "stderr") else "")
    assert "cannot reach Argilla" in out and "Traceback" not in out and "secret-key" not in out


def test_cli_push_not_a_run_dir(tmp_path):
    result = CliRunner().invoke(app, ["review", "push", str(tmp_path)])
    assert result.exit_code == 2  # a bad path, as for train, eval and report
    assert "is not a distillflow run directory" in result.output + getattr(result, "stderr", "")


def test_cli_pull_offline_without_saved_responses(tmp_path):
    from tests.review.records import SPEC_YAML, make_row
    from distillflow.engine.outputs import write_jsonl

    (tmp_path / "data").mkdir()
    (tmp_path / "pipeline.yaml").write_text(SPEC_YAML)
    write_jsonl(tmp_path / "data" / "curated.jsonl", [make_row(1)])
    result = CliRunner().invoke(app, ["review", "pull", str(tmp_path), "--offline"])
    assert result.exit_code == 1
    assert "no saved responses" in result.output + getattr(result, "stderr", "")
