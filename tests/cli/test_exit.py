"""`distillflow` exits without the interpreter's module teardown, and loses nothing by it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import ROOT


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_atexit_handlers_run_and_output_is_flushed(tmp_path):
    res = _python("""
        import atexit, pathlib, sys
        from distillflow.cli import exit_without_teardown
        atexit.register(lambda: pathlib.Path("atexit-ran").write_text("yes"))
        sys.stdout.write("x" * 200_000)          # buffered, not yet written to the pipe
        sys.stderr.write("last words")
        exit_without_teardown(3)
        print("never")
    """, tmp_path)
    assert res.returncode == 3
    assert res.stdout == "x" * 200_000 and res.stderr == "last words"
    assert (tmp_path / "atexit-ran").read_text() == "yes"


def test_a_live_worker_thread_is_joined_as_in_a_normal_exit(tmp_path):
    res = _python("""
        import pathlib, threading, time
        from distillflow.cli import exit_without_teardown
        def work():
            time.sleep(0.5)
            pathlib.Path("thread-done").write_text("yes")
        threading.Thread(target=work).start()
        exit_without_teardown(0)
    """, tmp_path)
    assert res.returncode == 0 and (tmp_path / "thread-done").read_text() == "yes"


def test_the_cli_keeps_its_exit_codes(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [\n")
    cli = [sys.executable, "-m", "distillflow"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    bad = subprocess.run([*cli, "validate", "bad.yaml"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
    unknown = subprocess.run([*cli, "no-such-command"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
    ok = subprocess.run([*cli, "--help"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "run" in ok.stdout
