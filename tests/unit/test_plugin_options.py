"""Image options checked at startup (``pytest_configure``): a usage error (exit 4)
naming the option or ini key, before any test runs. Through ``pytester``; the
session never starts, so nothing is swept and no container runs."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("value", ["bogus", "Never", "ALWAYS"])
def test_a_bad_ini_pull_policy_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makeini(f"[pytest]\ncontainer_pull = {value}\n")
    pytester.makepyfile("def test_never_runs(): raise AssertionError")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: ini container_pull: invalid pull policy '{value}'; allowed values:"
         " always, missing, never"]
    )  # fmt: skip


@pytest.mark.parametrize("where", ["ini", "option"])
def test_an_empty_store_path_is_a_usage_error(pytester: pytest.Pytester, where: str) -> None:
    pytester.makeini("[pytest]\ncontainer_store =\n" if where == "ini" else "[pytest]\n")
    pytester.makepyfile("def test_never_runs(): raise AssertionError")
    args = ["--container-store="] if where == "option" else []
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    name = "ini container_store" if where == "ini" else "--container-store"
    result.stderr.fnmatch_lines([f"ERROR: {name}: store path '' is empty*"])
    assert not (pytester.path / "oci").exists()
