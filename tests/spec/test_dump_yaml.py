"""The YAML a run writes (pipeline.yaml, Pipeline.to_yaml) reads back as the values that ran."""

from __future__ import annotations

import pytest
import yaml

from distillflow.spec import loader

VALUES = [
    "first line\x85second line",  # NEL: YAML reads it as a line break
    "it's \"quoted\"\x85and more",
    "line\u2028separator", "paragraph\u2029separator",
    "two\nlines\n", "trailing spaces  \nand a tab\t\n", "  leading spaces\nkept", "crlf\r\nline",
    "a block with a NEL\n\x85 inside\n", "plain: colon", "- dash", "yes", "null", "",
]
EMITTERS = [yaml.SafeDumper] + ([yaml.CSafeDumper] if hasattr(yaml, "CSafeDumper") else [])


@pytest.mark.parametrize("base", EMITTERS, ids=lambda b: b.__name__)
def test_strings_round_trip_with_either_emitter(base):
    dumper = loader._dumper(base)
    for v in VALUES:
        text = loader.dump_yaml({"q": v}, dumper=dumper)
        assert yaml.safe_load(text) == {"q": v}, text


def test_dump_yaml_round_trips_a_document():
    doc = {"name": "t", "rows": [{"question": v, "n": i} for i, v in enumerate(VALUES)]}
    assert yaml.safe_load(loader.dump_yaml(doc)) == doc
