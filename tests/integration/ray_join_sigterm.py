"""SIGTERM while the CLI is joining a Ray cluster (inside ``ray.init``), run inside ``unshare -n``.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.integration.ray_join_sigterm OUT.json'

Started by tests/integration/test_ray_join_sigterm.py, which asserts on OUT.json. The "cluster" is
a TCP listener that accepts and never answers, so ``ray.init`` waits for its GCS (a few seconds:
the test shortens Ray's GCS timeouts); the signal is sent once the driver has connected through
Ray's own client (the second connection: the first is distillflow's reachability check), when
Ray's SIGTERM handler is in place.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.ray_scenarios import deadline_poll  # noqa: E402
from tests.support import pipeline_yaml  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    tmp = out.parent
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list = []

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            conns.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    p = tmp / "pipeline.yaml"
    p.write_text(pipeline_yaml("http://127.0.0.1:9/v1", "  - kind: generate\n"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    env.update(PYTHONPATH=str(ROOT), RAY_py_gcs_connect_timeout_s="3", RAY_gcs_rpc_server_connect_timeout_s="2")
    cmd = [sys.executable, "-m", "distillflow", "run", str(p), "--out", str(tmp / "run"), "--no-progress",
           "--backend", "ray", "--address", f"127.0.0.1:{srv.getsockname()[1]}"]
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline_poll(lambda: len(conns) >= 2 or proc.poll() is not None, 120, "the driver joining")
        joining = proc.poll() is None
        time.sleep(0.3)  # (inside ray.init's wait for the GCS, which lasts seconds)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out.write_text(json.dumps({"joining_when_signalled": joining, "connections": len(conns), "rc": proc.returncode,
                               "err": (stdout + stderr)[-3000:]}))


if __name__ == "__main__":
    main()
