"""The plugin end to end, through ``pytester``: fixtures, options, teardown of
everything a test started (also when it fails), and clear option errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import needs

pytest_plugins = ["pytester"]

pytestmark = needs("docker-registry", "skopeo", "umoci")


def _leftovers() -> list[str]:
    """Every host object of ours, as the before-stop check finds them: ``ptc*``
    cgroup dirs (shared parents included), mounts, entries in ``/run/ptc``."""
    root = Path("/sys/fs/cgroup")
    found = [str(p) for depth in ("ptc*", "*/ptc*", "*/*/ptc*", "*/*/*/ptc*")
             for p in root.glob(depth) if p.is_dir()]
    found += [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "ptc" in line.split()[4]]
    if Path("/run/ptc").exists():
        found += [str(p) for p in Path("/run/ptc").iterdir()]
    return found


@pytest.mark.parametrize("backend", ["native", pytest.param("runc", marks=needs("runc"))])
def test_containers_fixture_runs_and_tears_down(
    pytester: pytest.Pytester, busybox_ref: str, backend: str, tmp_path: Path
) -> None:
    pytester.makepyfile(
        f"""
        import pytest
        IMAGE = {busybox_ref!r}

        def test_run(containers):
            result = containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (result.exit_code, result.stdout, result.stderr) == (3, "out\\n", "err\\n")
            assert not result.oom_killed

        def test_start_exec_and_fail(containers):
            handle = containers.start(IMAGE, ["sleep", "60"])
            assert handle.exec(["cat", "/proc/1/cmdline"]).stdout == b"sleep\\x0060\\x00"
            pytest.fail("deliberately, with a container still running")
        """
    )
    result = pytester.runpytest_subprocess(
        f"--container-runtime={backend}",
        f"--container-store={tmp_path / 'store'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1, failed=1)
    assert _leftovers() == []


def test_unknown_runtime_lists_the_available_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--container-runtime=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown backend 'nope'; available: *native*runc*"])
