"""Local-server bookkeeping that needs no server venv (the real start is in tests/integration)."""

import socket

import pytest
from typer.testing import CliRunner

from distillflow.cli import app
from distillflow.errors import ConfigurationError
from distillflow.review import server


def test_status_and_down_when_nothing_runs(tmp_path):
    st = server.status(data_dir=tmp_path, home=tmp_path / "home")
    assert st["running"] is False and st["venv_ready"] is False
    assert server.down(data_dir=tmp_path) is False
    result = CliRunner().invoke(app, ["review", "status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not running" in result.output


def test_up_refuses_a_busy_port_before_building_anything(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"port {port} on 127.0.0.1 is already in use.*--port"):
            server.up(port=port, data_dir=tmp_path, home=tmp_path / "home")
    assert not (tmp_path / "home" / "venv").exists()


def test_home_and_data_dir_follow_the_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLFLOW_ARGILLA_HOME", str(tmp_path))
    assert server.home_dir() == tmp_path
    assert server.data_dir_for() == tmp_path / "data"
    assert server.data_dir_for(tmp_path / "x") == tmp_path / "x"


def test_launcher_and_adapter_import_nothing_of_ours():
    # They run in the server's own venv, where distillflow is not installed.
    import re
    from pathlib import Path

    here = Path(server.__file__).parent
    for name in ("launch.py", "osmem_adapter.py"):
        text = (here / name).read_text()
        assert "argilla_server" in text
        assert not re.search(r"^\s*(from|import)\s+distillflow", text, re.M)
