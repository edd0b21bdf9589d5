"""Run Axolotl's and DeepSpeed's own validators on a rendered config.

    problems, warnings = check_axolotl(cfg, capabilities={"n_gpu": 8, "bf16": True})
    problems                      # [("lerning_rate", "unknown Axolotl key — did you mean 'learning_rate'?")]

Imports nothing from distillflow, so the same file also runs as a script inside another
environment that has axolotl (``train.python``)::

    /opt/axolotl/bin/python axolotl_check.py axolotl.yaml caps.json [deepspeed_filled.json]

and prints ``{"problems": [[key, message], ...], "warnings": [...]}`` as JSON.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import sys

# Pydantic model names of DeepSpeed / Axolotl sub-configs -> the key they live under.
_DS_TITLES = {
    "DeepSpeedZeroConfig": "zero_optimization",
    "DeepSpeedZeroOffloadOptimizerConfig": "zero_optimization.offload_optimizer",
    "DeepSpeedZeroOffloadParamConfig": "zero_optimization.offload_param",
    "DeepSpeedFP16Config": "fp16",
    "DeepSpeedBF16Config": "bf16",
}
_AX_TITLES = {"SFTDataset": "datasets[0]", "FSDPConfig": "fsdp_config"}


class _Capture(logging.Handler):
    """Collects Axolotl's warnings during validation instead of letting them spill onto the console."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _loc(err: dict, title: str, titles: dict) -> str:
    parts = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
    prefix = titles.get(title)
    return ".".join(([prefix] if prefix else []) + parts)


def _msg(err: dict) -> str:
    return str(err.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def known_keys() -> set[str]:
    """Every top-level key Axolotl's schema accepts (field names and their aliases)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from pydantic import AliasChoices

    names: set[str] = set()
    for name, f in AxolotlInputConfig.model_fields.items():
        names.add(name)
        if f.alias:
            names.add(f.alias)
        va = f.validation_alias
        if isinstance(va, str):
            names.add(va)
        elif isinstance(va, AliasChoices):
            names.update(c for c in va.choices if isinstance(c, str))
    return names


def plugin_keys(plugins: list[str]) -> tuple[set[str], list[tuple[str, str]]]:
    """Top-level keys the listed Axolotl plugins add to its schema (``kd_alpha`` for the KD plugin).

    Registers them with Axolotl's plugin manager, as ``axolotl train`` does, so that its validator
    merges their schemas too. Returns (keys, problems for plugins that cannot be loaded).
    """
    import importlib

    from axolotl.integrations.base import PluginManager

    keys: set[str] = set()
    problems: list[tuple[str, str]] = []
    manager = PluginManager.get_instance()
    for name in plugins or []:
        try:
            manager.register(name)
            plugin = manager.plugins[name]
            args = plugin.get_input_args()
            if args:
                module, cls = args.rsplit(".", 1)
                keys.update(getattr(importlib.import_module(module), cls).model_fields)
        except Exception as e:  # an unknown plugin path or one whose import fails
            problems.append(("plugins", f"cannot load Axolotl plugin {name}: {type(e).__name__}: {e}"))
    return keys, problems


def check_axolotl(cfg: dict, capabilities: dict | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """Validate ``cfg`` with ``axolotl.utils.config.validate_config``; unknown keys are errors here.

    ``capabilities`` describes the *target* machines (n_gpu, bf16, ...), not this one, so a config
    can be checked on a laptop before it goes to the cluster.
    """
    import pydantic
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    problems: list[tuple[str, str]] = []
    extra, problems = plugin_keys(list(cfg.get("plugins") or []))
    known = known_keys() | extra
    for key in cfg:
        if key not in known:
            match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            problems.append((key, "unknown Axolotl key" + (f" — did you mean '{match[0]}'?" if match else "")))
    caps = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "n_node": 1, "compute_capability": None}
    caps.update(capabilities or {})
    import torch

    env_caps = {"torch_version": str(torch.__version__).split("+", maxsplit=1)[0]}
    capture = _Capture()
    ax_logger = logging.getLogger("axolotl")
    old_propagate = ax_logger.propagate
    ax_logger.addHandler(capture)
    ax_logger.propagate = False
    try:
        validate_config(DictDefault(copy.deepcopy(cfg)), capabilities=caps, env_capabilities=env_caps)
    except pydantic.ValidationError as e:
        problems += [(_loc(err, e.title, _AX_TITLES), _msg(err)) for err in e.errors()]
    except (ValueError, AssertionError, TypeError, KeyError) as e:
        problems.append(("", str(e)))
    finally:
        ax_logger.removeHandler(capture)
        ax_logger.propagate = old_propagate
    return problems, capture.messages


def check_deepspeed(ds: dict) -> list[tuple[str, str]]:
    """Parse a DeepSpeed config (``auto`` values already filled) with ``deepspeed.runtime.config.DeepSpeedConfig``."""
    import pydantic
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(copy.deepcopy(ds))
    except pydantic.ValidationError as e:
        return [(_loc(err, e.title, _DS_TITLES), _msg(err)) for err in e.errors()]
    except (ValueError, AssertionError, TypeError, KeyError) as e:
        return [("", str(e))]
    return []


def main(argv: list[str]) -> int:
    import yaml

    cfg = yaml.safe_load(open(argv[0], encoding="utf-8"))
    caps = json.load(open(argv[1], encoding="utf-8")) if len(argv) > 1 else {}
    problems, warnings = check_axolotl(cfg, caps)
    if len(argv) > 2:
        problems += [(f"deepspeed.{k}" if k else "deepspeed", m) for k, m in
                     check_deepspeed(json.load(open(argv[2], encoding="utf-8")))]
    print("DISTILLFLOW_CHECK " + json.dumps({"problems": problems, "warnings": warnings}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
