"""``backend: ray`` without an address: each run starts a Ray instance on this machine and stops it
when it ends. Four such runs in one Python process: one with an HTTP teacher, two with a local
transformers teacher in a model copy, then the first again. Run inside ``unshare -n`` with
``HOME`` and ``RAY_TMPDIR`` in a temporary folder (what Ray writes there stays out of this
machine's own), by tests/integration/test_ray_local_instance.py, which asserts on OUT.json.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.integration.ray_local_instance OUT.json'
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.fake_endpoint import EndpointThread  # noqa: E402
from tests.integration.ray_scenarios import rows  # noqa: E402
from tests.support import local_model_yaml, pipeline_yaml  # noqa: E402


def main() -> None:
    import distillflow
    from tests.support.tiny import build_tiny_chat_model

    out_path = Path(sys.argv[1])
    tmp = Path(tempfile.mkdtemp(prefix="dfrl-"))
    result: dict = {}

    def record(out: Path) -> dict:
        return json.loads((out / "cache" / "ray-workers.json").read_text())

    with EndpointThread(latency=(0.0, 0.01)) as ep:
        http = tmp / "http"
        http.mkdir()
        (http / "pipeline.yaml").write_text(pipeline_yaml(ep.base_url, "  - kind: generate\n", rows=rows(12, "h"),
                                                          extra="execution: {backend: ray, shard_size: 3}\n"))
        t0 = time.perf_counter()
        first = distillflow.run(str(http / "pipeline.yaml"), out=http / "ray", progress=False)
        result["first_s"] = round(time.perf_counter() - t0, 1)
        import ray

        result["first_left_ray_running"] = ray.is_initialized()
        local = distillflow.run(str(http / "pipeline.yaml"), out=http / "local", progress=False, backend="local")
        result["first"] = {"curated": first.manifest["curated"], "workers": record(http / "ray"),
                           "same_as_local": (http / "ray" / "data" / "curated.jsonl").read_text()
                           == (http / "local" / "data" / "curated.jsonl").read_text(),
                           "local_curated": local.manifest["curated"]}

        model = build_tiny_chat_model(tmp / "tiny")
        mc = tmp / "copies"
        mc.mkdir()
        (mc / "pipeline.yaml").write_text(local_model_yaml(model, 6, "    copies: 1", "backend: ray, shard_size: 2",
                                                           concurrency=2, name="local-copies"))
        runs = []
        for i in range(2):  # (two fresh Ray instances: the first's copy is gone with it)
            r = distillflow.run(str(mc / "pipeline.yaml"), out=mc / f"ray{i}", progress=False)
            runs.append({"curated": r.manifest["curated"], "new": r.manifest["teachers"]["local"]["new"],
                         "workers": record(mc / f"ray{i}")})
        local = distillflow.run(str(mc / "pipeline.yaml"), out=mc / "local", progress=False, backend="local")
        result["copies"] = {"runs": runs, "same_as_local": [
            (mc / f"ray{i}" / "data" / "curated.jsonl").read_text() == (mc / "local" / "data" / "curated.jsonl").read_text()
            for i in range(2)], "local_curated": local.manifest["curated"]}

        again = distillflow.run(str(http / "pipeline.yaml"), out=http / "again", progress=False)
        result["again"] = {"curated": again.manifest["curated"], "workers": record(http / "again"),
                           "same_as_local": (http / "again" / "data" / "curated.jsonl").read_text()
                           == (http / "local" / "data" / "curated.jsonl").read_text()}
        result["left_ray_running"] = ray.is_initialized()
    out_path.write_text(json.dumps(result, indent=1, default=str))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
