"""benchmarks/ray_floor.py: the parts that do not need a cluster (the benchmark itself starts one;
it is run by hand, its figures are in docs/benchmarks.md)."""

import ast
import inspect
import textwrap

from benchmarks.ray_floor import DRIVER_CALLS, _noop_task, floor_cpu
from distillflow.engine import ray_executor


def _reply_keys_read_by_driver() -> set[str]:
    """The keys RayExecutor._shard reads from a shard task's reply (``res[...]``, ``res.get(...)``)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(ray_executor.RayExecutor._shard)))
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "res":
            if isinstance(node.slice, ast.Constant):
                keys.add(node.slice.value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "res"):
            keys.add(node.args[0].value)
    return keys


def test_the_noop_task_replies_with_what_the_driver_reads_from_a_shard():
    # the floor's task must send back a reply of the real one's shape, else it measures less than Ray's share
    read = _reply_keys_read_by_driver()
    assert {"node", "pid", "part", "ledger", "stats", "complete", "outputs"} <= read  # (the parse found them)
    reply = _noop_task([None], None, "run", {}, 3, ["generate"], {}, [])
    assert read <= set(reply)
    assert reply["stats"]["generate"]["units"] == 250 and reply["complete"] == {"generate": True}


def test_floor_adds_idle_seconds_tasks_and_every_hub_call():
    run = {"secs": 0.5, "tasks": 8, "calls": 10}
    got = floor_cpu(run, idle_rate=0.04, task_cpu=0.002, call_cpu=0.001)
    assert got["idle"] == 0.5 * 0.04
    assert got["tasks"] == 8 * 0.002
    assert got["hub calls"] == (10 + DRIVER_CALLS) * 0.001
    assert abs(got["total"] - (0.02 + 0.016 + 0.013)) < 1e-12
