"""Containers without a mount namespace (runtime-tools ``linux_ns_itype``): the
rootfs is set up in the runtime's own mount namespace and entered with
``chroot``; every mount of that set-up is taken off again at ``delete``, at a
failed ``create``/``start``, and by ``delete --force`` or the sweep after the
runtime was killed half-way, and only those (the caller's mounts at and under the
rootfs stay, the propagation of its ``/`` is not changed).

Each test runs its containers from a driver inside ``unshare -m --propagation
private``, so the host's mount namespace is never touched, and the driver reads
that namespace's ``/proc/self/mountinfo`` after ``delete``: the conftest's leak
check cannot see those mounts (it still checks state dirs, cgroups, processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.linux.conftest import issue_id, leftovers, processes_in

CLI = [sys.executable, "-m", "pytest_containers.runtime.cli"]

#: helpers of the driver scripts (run inside the private mount namespace)
_PRELUDE = r'''
import json, os, signal, subprocess, sys, time
from pathlib import Path

CLI = [sys.executable, "-m", "pytest_containers.runtime.cli"]
ARGS = json.loads(os.environ["PTC_TEST_ARGS"])


def rt(*args, **kwargs):
    """ptc-runtime ARGS, output captured unless redirected."""
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([*CLI, *args], text=True, stdin=subprocess.DEVNULL, timeout=60,
                          check=False, **kwargs)


def mountinfo():
    """(id, parent id, mount point, optional fields, fstype) of every mount here."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            point = fields[4].encode().decode("unicode_escape")
            out.append((int(fields[0]), int(fields[1]), point, " ".join(fields[6:sep]),
                        fields[sep + 1]))
    return out


def mounts_under(path):
    """The mounts at or under ``path`` (real path): [[id, mount point, fstype]]."""
    path = os.path.realpath(path)
    return [[m[0], m[2], m[4]] for m in mountinfo()
            if m[2] == path or m[2].startswith(path + "/")]


def root_propagation():
    return [m[3] for m in mountinfo() if m[2] == "/"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def state(cid, *root):
    proc = rt(*root, "state", cid)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr}


def done(**result):
    print("RESULT " + json.dumps(result), flush=True)


# a shared "/" in this namespace (its own peer group: the host's is not involved) to
# see that the container's set-up leaves its propagation alone
subprocess.run(["mount", "--make-rshared", "/"], check=True)
'''


def in_private_ns(script: str, **args: Any) -> dict[str, Any]:
    """Run the driver ``script`` (after :data:`_PRELUDE`; ``ARGS`` holds ``args``) in
    ``unshare -m --propagation private``; returns what it passed to ``done``."""
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c",
         _PRELUDE + textwrap.dedent(script)],
        env=os.environ | {"PTC_TEST_ARGS": json.dumps(args)}, capture_output=True,
        text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, proc.stdout + proc.stderr
    return json.loads(results[-1][len("RESULT "):])


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Path:
    """A bundle (busybox rootfs copy, ``ptc-runtime spec``) whose config has no
    namespace at all and no hostname: what ``linux_ns_itype`` runs."""
    path = tmp_path / "bundle"
    path.mkdir()
    shutil.copytree(busybox_rootfs, path / "rootfs", symlinks=True)
    (path / "rootfs").chmod(0o755)
    proc = subprocess.run([*CLI, "spec", "--bundle", str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    configure(path, linux={"namespaces": []}, hostname=None)
    return path


def configure(bundle: Path, *args: str, linux: dict[str, Any] | None = None,
              **changes: Any) -> dict[str, Any]:
    """Set ``process.args`` (when given), keys of ``linux`` and top-level ``changes``
    (``None`` removes the key) in the bundle's config."""
    config = json.loads((bundle / "config.json").read_text())
    if args:
        config["process"]["args"] = list(args)
    for key, value in (linux or {}).items():
        config["linux"][key] = value
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (bundle / "config.json").write_text(json.dumps(config))
    return config


def _check_clean(result: dict[str, Any], cid: str) -> None:
    assert result["after"] == result["before"], "mounts left in the caller's namespace"
    assert result["propagation_after"] == result["propagation_before"]
    assert "shared:" in result["propagation_after"][0]
    assert leftovers(cid) == [] and processes_in(cid) == []


def test_namespaces_are_the_runtimes_output_and_exit_status_pass(bundle: Path,
                                                                tmp_path: Path) -> None:
    """runtime-tools ``linux_ns_itype``: with no namespace in the config, every
    ``/proc/<pid>/ns/*`` of the created container is the runtime's; ``start`` runs
    it chrooted into the rootfs (its own files, ``/proc`` mounted there, the
    host's ``/etc`` out of sight), its output on create's stdout; a foreground
    ``run`` passes the exit status through; ``delete`` leaves exactly the mounts
    there were."""
    configure(bundle, "sh", "-c", "echo out; cat /lower-marker; test -e /etc/os-release "
              "|| echo no-host-etc; test -e /proc/self/status && echo proc; exit 7")
    cid, cid2 = issue_id(), issue_id()
    result = in_private_ns('''
        bundle, out = ARGS["bundle"], Path(ARGS["out"])
        before, propagation = mounts_under(bundle), root_propagation()
        with open(out, "w") as f:
            created = rt("create", "--bundle", bundle, ARGS["cid"], stdout=f, stderr=f)
        st = state(ARGS["cid"])
        pid = st.get("pid", 0)
        ns = sorted(os.listdir("/proc/self/ns"))
        same = {n: os.readlink(f"/proc/{pid}/ns/{n}") == os.readlink(f"/proc/self/ns/{n}")
                for n in ns} if pid else {}
        root = os.readlink(f"/proc/{pid}/root") if pid else ""
        during = mounts_under(bundle)
        started = rt("start", ARGS["cid"])
        wait_for(lambda: state(ARGS["cid"]).get("status") == "stopped")
        deleted = rt("delete", ARGS["cid"])
        ran = rt("run", "--bundle", bundle, ARGS["cid2"])
        done(created=created.returncode, status=st.get("status"), same=same, root=root,
             during=len(during), started=[started.returncode, started.stderr],
             output=out.read_text(), deleted=[deleted.returncode, deleted.stderr],
             ran=[ran.returncode, ran.stdout, ran.stderr], before=before,
             after=mounts_under(bundle), propagation_before=propagation,
             propagation_after=root_propagation())
    ''', bundle=str(bundle), cid=cid, cid2=cid2, out=str(tmp_path / "create.out"))
    assert result["created"] == 0, result["output"]
    assert result["status"] == "created"
    assert len(result["same"]) >= 7 and all(result["same"].values()), result["same"]
    assert result["root"] == str(bundle / "rootfs")
    assert result["during"] >= 7  # the rootfs bind, /proc, /dev, /dev/pts, ... /sys
    assert result["started"] == [0, ""]
    expected = "out\nfrom the lower layer\nno-host-etc\nproc\n"
    assert result["output"] == expected
    assert result["deleted"] == [0, ""]
    assert result["ran"] == [7, expected, ""]
    _check_clean(result, cid)
    assert leftovers(cid2) == []


def test_the_callers_mounts_at_and_under_the_rootfs_stay(bundle: Path) -> None:
    """The rootfs is a mount point of the caller's (as podman's overlay) with a
    mount of the caller's below it: the container sees it (the rootfs is bound
    recursively), masked and read-only paths work without a mount namespace, and
    after ``delete`` the caller's two mounts, and only they, are there as before
    (same mount ids), the file on the caller's tmpfs intact."""
    configure(bundle, "sh", "-c", "cat /callers/file; cat /proc/timer_list | wc -c; "
              "{ echo 1 > /proc/sys/kernel/domainname; } 2>/dev/null || echo ro-sys")
    cid = issue_id()
    result = in_private_ns('''
        bundle = ARGS["bundle"]
        rootfs = bundle + "/rootfs"
        subprocess.run(["mount", "--bind", rootfs, rootfs], check=True)
        os.makedirs(rootfs + "/callers", exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "ptc-test-callers", rootfs + "/callers"],
                       check=True)
        Path(rootfs + "/callers/file").write_text("the caller's\\n")
        before, propagation = mounts_under(bundle), root_propagation()
        ran = rt("run", "--bundle", bundle, ARGS["cid"])
        after = mounts_under(bundle)
        content = Path(rootfs + "/callers/file").read_text()
        subprocess.run(["umount", rootfs + "/callers"], check=True)
        subprocess.run(["umount", rootfs], check=True)
        done(ran=[ran.returncode, ran.stdout, ran.stderr], before=before, after=after,
             content=content, propagation_before=propagation,
             propagation_after=root_propagation())
    ''', bundle=str(bundle), cid=cid)
    assert result["ran"] == [0, "the caller's\n0\nro-sys\n", ""]
    assert len(result["before"]) >= 2  # and the copy "/" (shared) got of the tmpfs
    assert result["content"] == "the caller's\n"
    _check_clean(result, cid)


@pytest.mark.parametrize("how", ["create", "run", "start"])
def test_a_failed_create_or_start_leaves_no_mount(bundle: Path, how: str) -> None:
    """A missing command fails ``create`` and ``run`` (127, runc's words) once the
    rootfs is set up; a failing ``startContainer`` hook fails ``start`` (the container
    is stopped, ``delete`` removes it): no mount stays in the caller's namespace."""
    if how == "start":
        configure(bundle, "true", hooks={"startContainer": [{"path": "/bin/false"}]})
    else:
        configure(bundle, "/no/such/command")
    cid = issue_id()
    result = in_private_ns('''
        bundle, how, cid = ARGS["bundle"], ARGS["how"], ARGS["cid"]
        before, propagation = mounts_under(bundle), root_propagation()
        with open(ARGS["log"], "w") as log:  # the container's stdio: not a pipe
            first = rt(how if how != "start" else "create", "--bundle", bundle, cid,
                       stdout=log, stderr=log)
        first.stderr = Path(ARGS["log"]).read_text()
        second = rt("start", cid) if how == "start" else first
        middle = mounts_under(bundle)
        deleted = rt("delete", cid) if how == "start" else first
        done(first=[first.returncode, first.stderr], second=[second.returncode, second.stderr],
             middle=len(middle), deleted=deleted.returncode, before=before,
             after=mounts_under(bundle), propagation_before=propagation,
             propagation_after=root_propagation())
    ''', bundle=str(bundle), how=how, cid=cid, log=str(bundle.parent / "create.log"))
    if how == "start":
        assert result["first"] == [0, ""]
        assert result["second"][0] == 1 and "startContainer" in result["second"][1]
        assert result["middle"] >= 7  # stopped, not deleted: its mounts are there
        assert result["deleted"] == 0
    else:
        assert result["first"][0] == 127
        assert 'exec: "/no/such/command"' in result["first"][1]
        assert result["middle"] == 0
    _check_clean(result, cid)


@pytest.mark.parametrize("cleanup", ["delete --force", "sweep"])
def test_a_create_killed_midway_leaves_no_mount(bundle: Path, tmp_path: Path,
                                                 cleanup: str) -> None:
    """``kill -9`` of ``ptc-runtime create`` while its init is still setting up the
    rootfs (a ``tmpcopyup`` tmpfs of 256 MiB of sparse files, about 0.7 s to copy
    here) in the caller's namespace, then
    ``delete --force`` (or the sweep of the dead owner): the init is killed, its
    mounts taken off (none stays), the state dir gone."""
    big = bundle / "rootfs" / "big"
    big.mkdir()
    for i in range(4):
        with open(big / f"f{i}", "wb") as f:
            f.truncate(64 << 20)
    config = configure(bundle, "true")
    config["mounts"].append({"destination": "/big", "type": "tmpfs", "source": "tmpfs",
                             "options": ["tmpcopyup"]})
    (bundle / "config.json").write_text(json.dumps(config))
    cid = issue_id()
    root = str(tmp_path / "state") if cleanup == "sweep" else ""
    result = in_private_ns('''
        bundle, cid, cleanup = ARGS["bundle"], ARGS["cid"], ARGS["cleanup"]
        root = ["--root", ARGS["root"]] if ARGS["root"] else []
        before, propagation = mounts_under(bundle), root_propagation()
        target = os.path.realpath(bundle) + "/rootfs/big"
        create = subprocess.Popen([*CLI, *root, "create", "--bundle", bundle, cid],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        seen = wait_for(lambda: any(m[1] == target for m in mounts_under(bundle)), 30)
        still_creating = create.poll() is None
        create.send_signal(signal.SIGKILL)
        create.wait()
        state_dir = Path(ARGS["root"] or "/run/ptc") / cid
        saved = json.loads((state_dir / "state.json").read_text())
        mid = mounts_under(bundle)
        if cleanup == "sweep":
            from pytest_containers.runtime.sweep import sweep
            swept = sweep(Path(ARGS["root"]))
            outcome = swept == [cid]
        else:
            outcome = rt(*root, "delete", "--force", cid).returncode == 0
        init_gone = not os.path.exists(f"/proc/{saved['pid']}") or wait_for(
            lambda: not os.path.exists(f"/proc/{saved['pid']}"), 5)
        done(seen=seen, still_creating=still_creating, killed=create.returncode,
             mid=len(mid), outcome=outcome, init_gone=init_gone,
             state_dir=state_dir.exists(), before=before, after=mounts_under(bundle),
             propagation_before=propagation, propagation_after=root_propagation())
    ''', bundle=str(bundle), cid=cid, cleanup=cleanup, root=root)
    assert result["seen"] and result["still_creating"], result
    assert result["killed"] == -9
    assert result["mid"] >= 2  # the rootfs bind and /big at least
    assert result["outcome"] and result["init_gone"] and not result["state_dir"]
    _check_clean(result, cid)


def test_exec_runs_in_the_containers_root(bundle: Path, tmp_path: Path) -> None:
    """``exec`` in a container without a mount namespace joins its root (the init's
    ``/proc/<pid>/root``), not the runtime's; ``delete --force`` of the running
    container leaves no mount."""
    configure(bundle, "sleep", "60")
    cid = issue_id()
    result = in_private_ns('''
        bundle, cid = ARGS["bundle"], ARGS["cid"]
        before, propagation = mounts_under(bundle), root_propagation()
        created = rt("create", "--bundle", bundle, cid, stdout=subprocess.DEVNULL)
        started = rt("start", cid)
        ran = rt("exec", cid, "sh", "-c", "cat /lower-marker; pwd; ls /etc")
        deleted = rt("delete", "--force", cid)
        done(created=created.returncode, started=started.returncode,
             ran=[ran.returncode, ran.stdout, ran.stderr], deleted=deleted.returncode,
             before=before, after=mounts_under(bundle), propagation_before=propagation,
             propagation_after=root_propagation())
    ''', bundle=str(bundle), cid=cid)
    assert (result["created"], result["started"], result["deleted"]) == (0, 0, 0)
    assert result["ran"] == [0, "from the lower layer\n/\npasswd\n", ""]
    _check_clean(result, cid)


@pytest.mark.parametrize("mount_ns", [True, False])
def test_no_pivot(bundle: Path, mount_ns: bool) -> None:
    """``--no-pivot`` (runc's): with a mount namespace the rootfs is moved onto its
    ``/`` (``MS_MOVE``) and chrooted into, the host's proc and sysfs taken away
    first (the container's ``/proc`` is the only proc it sees); without one it is
    ignored (``chroot``, as always there)."""
    if mount_ns:
        configure(bundle, linux={"namespaces": [{"type": t} for t in ("pid", "mount")]})
    configure(bundle, "sh", "-c", "cat /lower-marker; "
              "awk '$4 == \"/\" && / - proc /' /proc/self/mountinfo | wc -l; "
              "awk '$5 == \"/\"' /proc/self/mountinfo | wc -l; echo $$")
    cid = issue_id()
    result = in_private_ns('''
        bundle, cid = ARGS["bundle"], ARGS["cid"]
        before, propagation = mounts_under(bundle), root_propagation()
        ran = rt("run", "--no-pivot", "--bundle", bundle, cid)
        done(ran=[ran.returncode, ran.stdout, ran.stderr], before=before,
             after=mounts_under(bundle), propagation_before=propagation,
             propagation_after=root_propagation())
    ''', bundle=str(bundle), cid=cid)
    code, out, err = result["ran"]
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "from the lower layer"
    # one full proc (its own), the rootfs at / (of the chroot); PID 1 in its pid namespace
    assert lines[1:] == ["1", "1", "1"] if mount_ns else lines[1:3] == ["1", "1"]
    if not mount_ns:
        assert lines[3] != "1"  # no pid namespace either
    _check_clean(result, cid)


#: the in-process engine given configs without a mount namespace (``to_config`` wrapped)
_IN_PROCESS = r'''
import os, sys, time
from pathlib import Path
from pytest_containers.runtime.native import engine
from pytest_containers.runtime.types import ContainerSpec

_to_config = engine.to_config


def _without_mount_namespace(*args, **kwargs):
    config = _to_config(*args, **kwargs)
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != "mount"]
    return config


engine.to_config = _without_mount_namespace


def start(state_root, layer, cid, *args):
    runtime = engine.NativeRuntime(state_root=Path(state_root))
    return runtime.start(ContainerSpec(args=args, layers=(Path(layer),)), container_id=cid)


if __name__ == "__main__":  # the owner that gets killed: start, say the pid, sleep
    c = start(sys.argv[1], sys.argv[2], sys.argv[3], "sleep", "60")
    print(c.pid, flush=True)
    time.sleep(60)
'''


def test_in_process_engine_without_a_mount_namespace(busybox_rootfs: Path,
                                                     tmp_path: Path) -> None:
    """The in-process engine (:class:`NativeRuntime`) runs the same child code: given a
    config without a mount namespace, its overlay rootfs is mounted in the caller's
    namespace, in the state dir, entered with ``chroot``, and ``delete`` takes it off
    with everything below it; when the owner is killed (``kill -9``) the sweep does."""
    helper = tmp_path / "in_process.py"
    helper.write_text(_IN_PROCESS)
    cid, cid2 = issue_id(), issue_id()
    result = in_private_ns('''
        sys.path.insert(0, os.path.dirname(ARGS["helper"]))
        import in_process
        from pytest_containers.runtime.sweep import sweep

        state_root, layer = ARGS["state_root"], ARGS["layer"]
        os.makedirs(state_root)
        before, propagation = mounts_under(state_root), root_propagation()
        c = in_process.start(state_root, layer, ARGS["cid"], "sh", "-c",
                             "cat /lower-marker; echo new > /new; cat /new; "
                             "test -e /etc/os-release || echo chrooted")
        status = c.wait(20)
        output = c.stdout_path.read_text()
        during = mounts_under(state_root)
        c.delete()
        after_delete = mounts_under(state_root)
        owner = subprocess.Popen([sys.executable, ARGS["helper"], state_root, layer,
                                  ARGS["cid2"]], stdout=subprocess.PIPE, text=True)
        init_pid = int(owner.stdout.readline())
        mid = mounts_under(state_root)
        owner.kill()
        owner.wait()
        wait_for(lambda: not os.path.exists(f"/proc/{init_pid}"))
        swept = sweep(Path(state_root))
        done(status=status.exit_code, output=output, during=len(during),
             after_delete=after_delete, mid=len(mid), swept=swept, before=before,
             after=mounts_under(state_root), left=os.listdir(state_root),
             propagation_before=propagation, propagation_after=root_propagation())
    ''', helper=str(helper), state_root=str(tmp_path / "state"), layer=str(busybox_rootfs),
        cid=cid, cid2=cid2)
    assert result["status"] == 0
    assert result["output"] == "from the lower layer\nnew\nchrooted\n"
    assert result["during"] >= 7 and result["mid"] >= 7
    assert result["after_delete"] == []
    assert result["swept"] == [cid2]
    assert result["left"] == []
    assert result["after"] == result["before"] == []
    assert result["propagation_after"] == result["propagation_before"]


@pytest.mark.parametrize("caller_bind", [False, True])
def test_undo_takes_off_ours_only_under_a_shared_parent(tmp_path: Path,
                                                         caller_bind: bool) -> None:
    """:mod:`~pytest_containers.runtime.linux.hostmounts` on its own, under a shared
    ``/`` (the host's usual state): the rootfs (a plain directory, or a bind mount
    of the caller's, with a tmpfs of the caller's below it) mounted by
    :func:`mount_root` for a ``chroot`` plan, mounts below it, stacked ones too;
    :func:`undo` unmounts them deepest first and leaves the namespace's mount table as
    it was (no propagated copy in a peer left behind), the record removed."""
    result = in_private_ns('''
        from pytest_containers.runtime.linux import hostmounts, syscalls as sc
        from pytest_containers.runtime.linux.mounts import RootfsPlan, mount_root

        base = Path(ARGS["base"])
        rootfs, state = base / "rootfs", base / "state"
        for d in (rootfs / "callers", rootfs / "proc", rootfs / "d", state):
            d.mkdir(parents=True)
        if ARGS["caller_bind"]:
            subprocess.run(["mount", "--bind", rootfs, rootfs], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "ptc-test", rootfs / "callers"], check=True)
        before, propagation = mounts_under(base), root_propagation()
        found = hostmounts.record(state, rootfs)
        mount_root(RootfsPlan(rootfs=str(rootfs), mounts=(), enter="chroot"), None, ["root"])
        sc.mount("proc", rootfs / "proc", "proc", 0, None)
        sc.mount("tmpfs", rootfs / "d", "tmpfs", 0, None)
        os.mkdir(rootfs / "d" / "e")
        sc.mount("tmpfs", rootfs / "d" / "e", "tmpfs", 0, None)
        sc.mount("tmpfs", rootfs / "d", "tmpfs", 0, None)  # stacked, hides d/e
        seen = (rootfs / "callers").is_mount()
        ours = hostmounts.ours(state)
        undone = hostmounts.undo(state)
        done(stacked=len(found.stacked), seen=seen, ours=ours, undone=undone,
             again=hostmounts.undo(state), before=before, after=mounts_under(base),
             record=os.listdir(state), propagation_before=propagation,
             propagation_after=root_propagation())
    ''', base=str(tmp_path / "base"), caller_bind=caller_bind)
    rootfs = str(tmp_path / "base" / "rootfs")
    assert result["stacked"] == (1 if caller_bind else 0)
    assert result["seen"]
    expected = [f"{rootfs}/d", f"{rootfs}/d/e", f"{rootfs}/d", f"{rootfs}/proc",
                f"{rootfs}/callers", rootfs]
    assert result["ours"] == result["undone"] == expected
    assert result["again"] == [] and result["record"] == []
    assert result["after"] == result["before"]
    assert result["propagation_after"] == result["propagation_before"]


@pytest.mark.parametrize(("namespaces", "no_pivot", "enter"), [
    (["pid", "mount"], False, "pivot_root"), (["pid", "mount"], True, "move"),
    (["pid", "network"], False, "chroot"), ([], True, "chroot")])
def test_how_the_init_enters_its_rootfs(tmp_path: Path, namespaces: list[str], no_pivot: bool,
                                        enter: str) -> None:
    """``pivot_root`` in a mount namespace, ``MS_MOVE`` + ``chroot`` with ``--no-pivot``,
    ``chroot`` without a mount namespace (``--no-pivot`` ignored there)."""
    from pytest_containers.runtime.linux.rootfs import plan_rootfs

    config = {"linux": {"namespaces": [{"type": t} for t in namespaces]}}
    plan = plan_rootfs(config, tmp_path, no_pivot=no_pivot)
    assert plan.enter == enter
    assert plan.own_mount_namespace == (enter != "chroot")


@pytest.mark.parametrize(("change", "field"), [
    ({"linux": {"namespaces": [{"type": "user"}], "uidMappings": [
        {"containerID": 0, "hostID": 100000, "size": 1}], "gidMappings": [
        {"containerID": 0, "hostID": 100000, "size": 1}]}}, "linux.namespaces"),
    ({"root": {"path": "/"}}, "root.path")])
def test_configs_that_cannot_run_without_a_mount_namespace(bundle: Path, change: dict[str, Any],
                                                           field: str) -> None:
    """A user namespace without a mount namespace (its root may not mount in ours) and
    the host's ``/`` as the rootfs (it cannot be bound onto itself and taken off) are
    refused before anything is made, naming the field."""
    config = json.loads((bundle / "config.json").read_text())
    for key, value in change.items():
        config[key] = config[key] | value if isinstance(config.get(key), dict) else value
    (bundle / "config.json").write_text(json.dumps(config))
    cid = issue_id()
    proc = subprocess.run([*CLI, "run", "--bundle", str(bundle), cid], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert field in proc.stderr and "mount namespace" in proc.stderr, proc.stderr
    assert leftovers(cid) == []
