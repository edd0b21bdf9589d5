"""`tests.support.require`: a missing test dependency skips with its fix, and fails under CI=true."""

from __future__ import annotations

import pytest

from tests.support import need_binary, need_module, require


def test_absent_dependency_skips_with_the_fix(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^'no-such-tool-x' is not installed: apt-get install x$"):
        need_binary("no-such-tool-x", "apt-get install x")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_absent_dependency_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"Python package 'no_such_pkg_x' is not installed: pip install x \(CI=true"):
        need_module("no_such_pkg_x", "pip install x")


def test_present_dependency_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert need_module("json", "-").dumps([1]) == "[1]"
    assert need_binary("sh", "-").endswith("/sh")
    require(True, "anything", "nothing to do")  # no exception
