"""Image config + docker run options -> ContainerSpec (docker's merging rules)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_containers.runtime import Resources
from pytest_containers.runtime.spec import to_config

from pytest_containers.convert import (
    STOP_SIGNAL_ANNOTATION,
    command_args,
    container_spec,
    merge_env,
    resolve_user,
)
from pytest_containers.exceptions import ContainerStartError, InvalidOptionError


@dataclass
class Config:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str | None = None
    user: str | None = None
    stop_signal: str = ""


def spec(cfg: Config, layers=(), **kw):
    return container_spec(
        layers=layers, image_config=cfg, hostname="h", resources=Resources(), **kw
    )


def test_cmd_used_when_no_command_given():
    assert spec(Config(cmd=["sh"])).args == ("sh",)


def test_command_replaces_cmd_and_follows_entrypoint():
    cfg = Config(entrypoint=["/init", "--"], cmd=["serve"])
    assert spec(cfg, command=["echo", "hi"]).args == ("/init", "--", "echo", "hi")
    assert spec(cfg).args == ("/init", "--", "serve")


def test_given_entrypoint_drops_image_cmd():
    cfg = Config(entrypoint=["/init"], cmd=["serve"])
    assert spec(cfg, entrypoint="env").args == ("env",)


def test_string_command_is_split_like_a_shell():
    assert command_args("sh -c 'echo a b'") == ["sh", "-c", "echo a b"]


def test_no_command_anywhere_is_a_clear_error():
    with pytest.raises(ContainerStartError, match="no command"):
        spec(Config())


def test_env_overrides_by_key_and_path_defaults():
    env = merge_env(["A=1", "B=2"], {"B": "3", "C": "4"})
    assert env[:3] == ("A=1", "B=3", "C=4")
    assert env[3].startswith("PATH=/usr/local/sbin")
    assert merge_env(["PATH=/x"], None) == ("PATH=/x",)


def test_workdir_and_user_from_image_or_options(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    s = spec(Config(cmd=["x"], working_dir="/srv", user="web"), layers=[tmp_path])
    assert (s.cwd, s.uid, s.gid) == ("/srv", 33, 44)
    s = spec(Config(cmd=["x"]), layers=[tmp_path], user="web:staff", workdir="/tmp")
    assert (s.cwd, s.uid, s.gid) == ("/tmp", 33, 50)
    assert resolve_user("1000:1001", [tmp_path]) == (1000, 1001, ())
    assert resolve_user("1000", [tmp_path]) == (1000, 0, ())
    with pytest.raises(ContainerStartError, match="nobody"):
        resolve_user("nobody", [tmp_path])


def test_user_groups_as_runc_reads_them(tmp_path: Path):
    """A uid found in /etc/passwd gets its gid, and a user its supplementary groups
    (runc's user.GetExecUser); both reach the runtime config."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:44::/srv:/bin/sh\n")
    (tmp_path / "etc/group").write_text("web:x:44:\nlog:x:60:web\naudio:x:61:other,web\n")
    assert resolve_user("33", [tmp_path]) == (33, 44, (60, 61))
    assert resolve_user("web", [tmp_path]) == (33, 44, (60, 61))
    assert resolve_user("web:60", [tmp_path]) == (33, 60, ())
    s = spec(Config(cmd=["x"], user="web"), layers=[tmp_path])
    assert s.additional_gids == (60, 61)
    assert to_config(s, container_id="c")["process"]["user"] == {
        "uid": 33, "gid": 44, "additionalGids": [60, 61]
    }
    assert spec(Config(cmd=["x"], user="web"), layers=[tmp_path]).env[-1] == "HOME=/srv"


def test_passwd_deleted_by_an_upper_layer(tmp_path: Path):
    base, top = tmp_path / "base", tmp_path / "top"
    (base / "etc").mkdir(parents=True)
    (base / "etc/passwd").write_text("app:x:7:7::/:/bin/sh\n")
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc/passwd", stat.S_IFCHR, os.makedev(0, 0))  # overlay whiteout
    with pytest.raises(ContainerStartError, match="app"):
        resolve_user("app", [base, top])
    assert resolve_user("", [base, top]) == (0, 0, ())


def test_image_stop_signal_becomes_the_annotation():
    s = spec(Config(cmd=["x"], stop_signal="SIGQUIT"))
    assert dict(s.annotations)[STOP_SIGNAL_ANNOTATION] == "SIGQUIT"
    assert STOP_SIGNAL_ANNOTATION not in dict(spec(Config(cmd=["x"])).annotations)


def test_upper_layer_passwd_wins(tmp_path: Path):
    base, top = tmp_path / "base", tmp_path / "top"
    for layer, uid in ((base, 1), (top, 2)):
        (layer / "etc").mkdir(parents=True)
        (layer / "etc/passwd").write_text(f"app:x:{uid}:{uid}::/:/bin/sh\n")
    assert resolve_user("app", [base, top]) == (2, 2, ())


@pytest.mark.parametrize(
    ("text", "size"),
    [("64m", 64 << 20), ("1g", 1 << 30), ("8192k", 8192 << 10), ("64MiB", 64 << 20),
     (8 << 20, 8 << 20), ("7000000", 7_000_000)],
)
def test_memory_sizes(text, size):
    assert Resources.from_options(memory=text).memory_max_bytes == size


@pytest.mark.parametrize("bad", ["", "lots", "-1m", "12x", 0])
def test_bad_memory_size_names_the_value(bad):
    with pytest.raises(ValueError, match="memory size"):
        Resources.from_options(memory=bad)


def test_cpus_become_cfs_quota():
    r = Resources.from_options(cpus=0.5)
    assert (r.cpu_quota_us, r.cpu_period_us) == (50_000, 100_000)
    with pytest.raises(ValueError, match="cpus"):
        Resources.from_options(cpus=0)


@pytest.mark.parametrize("bad", ["1k", 1, "5m"])
def test_memory_below_docker_minimum_is_refused(bad):
    with pytest.raises(InvalidOptionError, match="minimum of 6 MiB") as info:
        Resources.from_options(memory=bad)
    assert (info.value.option, info.value.value) == ("memory", bad)


@pytest.mark.parametrize("bad", [1e308, 0.0001, (os.cpu_count() or 1) + 1])
def test_cpus_out_of_dockers_range_are_refused(bad):
    """docker's range, 0.01 to the host's CPUs: no traceback for a huge number, no
    silent acceptance of a quota the host cannot give."""
    with pytest.raises(InvalidOptionError, match="out of range: from 0.01 to") as info:
        Resources.from_options(cpus=bad)
    assert (info.value.option, info.value.value) == ("cpus", bad)
    assert Resources.from_options(cpus=0.01).cpu_quota_us == 1000


@pytest.mark.parametrize("bad", [10**20, "9000000t"])
def test_memory_beyond_the_page_counter_is_refused(bad):
    """What the kernel would wrap is refused as the ``memory`` option, not later as a
    failed write of ``memory.memsw.limit_in_bytes``; the int64 maximum is fine."""
    with pytest.raises(InvalidOptionError, match="int64 maximum") as info:
        Resources.from_options(memory=bad)
    assert (info.value.option, info.value.value) == ("memory", bad)
    assert Resources.from_options(memory=2**63 - 1).memory_max_bytes == 2**63 - 1


@pytest.mark.parametrize(("option", "value"), [("cpus", -1), ("cpus", "x"), ("cpus", float("inf")),
                                               ("pids", 0), ("pids", "16"), ("pids", True)])
def test_bad_cpus_and_pids_name_the_option(option, value):
    with pytest.raises(InvalidOptionError, match=option) as info:
        Resources.from_options(**{option: value})
    assert isinstance(info.value, ValueError)
    assert info.value.option == option


def test_cpus_may_be_given_as_a_string():
    assert Resources.from_options(cpus="0.25").cpu_quota_us == 25_000


def test_home_is_set_like_docker(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/srv/web:/bin/sh\n")
    env = spec(Config(cmd=["x"]), layers=[tmp_path], user="web").env
    assert "HOME=/srv/web" in env
    assert "HOME=/root" in spec(Config(cmd=["x"]), layers=[tmp_path]).env
    assert "HOME=/" in spec(Config(cmd=["x"]), layers=[tmp_path], user="4242").env
    assert "HOME=/h" in spec(Config(cmd=["x"]), layers=[tmp_path], env={"HOME": "/h"}).env
