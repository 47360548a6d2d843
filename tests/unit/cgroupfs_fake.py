"""A fake cgroup2 tree in a tmp dir, with the kernel behaviour the driver relies on
(``Documentation/admin-guide/cgroup-v2.rst``):

- ``mkdir`` fills in the core files plus those of each controller the parent
  enabled in ``cgroup.subtree_control``; enabling one later adds its files to the
  existing children (and their ``cgroup.controllers``);
- ``cgroup.subtree_control`` keeps set semantics, refuses a controller the
  cgroup's ``cgroup.controllers`` lacks (ENOENT);
- value files check what the kernel checks: ``max`` or a number, ``cpu.max``
  quota >= 1000 and period 1000..1000000 (EINVAL), ``cpu.weight`` 1..10000
  (ERANGE), ``cpuset.cpus``/``mems`` within the parent's effective set
  (EINVAL), ``io.max``/``io.weight`` only for a known block device (ENODEV),
  ``io.max`` merged per device and printed with all four keys;
- ``cgroup.freeze`` sets ``frozen`` in ``cgroup.events`` of the subtree (at once,
  or never when ``stuck_freezing``), ``cgroup.kill`` empties the subtree's
  ``cgroup.procs``, ``cgroup.procs`` updates ``populated``;
- ``rmdir`` refuses a cgroup with children or processes (EBUSY).

The driver's ``fs.make_dir``, ``fs.write`` and ``fs.remove_dir`` go through it;
reads are plain file reads.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from pytest_containers.runtime.linux.cgroups import fs

from pytest_containers.exceptions import CgroupError

ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
ORDER = ROOT_CONTROLLERS.split()
BLOCK_DEVICES = ("8:0", "254:0")
HUGE_PAGE_SIZES = ("2MB", "1GB")
_IO_KEYS = ("rbps", "wbps", "riops", "wiops")


def _cpu_list(text: str) -> set[int] | None:
    """``"0-2,5"`` -> {0, 1, 2, 5}; ``None`` when malformed."""
    out: set[int] = set()
    for part in text.strip().replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            return None
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if high < low:
            return None
        out.update(range(low, high + 1))
    return out


class FakeCgroupFs:
    """A cgroup2 root in ``root`` offering ``controllers``; ``swap``: swap accounting
    (``memory.swap.*``); ``bfq``: the BFQ scheduler's ``io.bfq.weight``;
    ``cpus``/``mems``: the root's effective cpuset. ``writes`` and ``mkdirs`` record
    the driver's calls (paths relative to the root)."""

    def __init__(self, root: Path, controllers: str = ROOT_CONTROLLERS, *, swap: bool = True,
                 bfq: bool = False, cpus: str = "0-3", mems: str = "0",
                 cgroup_kill: bool = True) -> None:
        self.root = root
        self.swap = swap
        self.bfq = bfq
        self.cgroup_kill = cgroup_kill
        self.stuck_freezing = False
        self.writes: list[tuple[str, str]] = []
        self.mkdirs: list[str] = []
        files = {
            "cgroup.controllers": controllers + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.procs": "1\n",
            "cgroup.max.depth": "max\n",
            "cgroup.stat": "nr_descendants 0\nnr_dying_descendants 0\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
            "memory.stat": "anon 0\n",
            "cpuset.cpus.effective": cpus + "\n",
            "cpuset.mems.effective": mems + "\n",
            "io.stat": "",
        }
        for name, text in files.items():
            (root / name).write_text(text)

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    # -- the kernel's files ---------------------------------------------------------

    def _controller_files(self, controller: str, parent: Path) -> dict[str, str]:
        if controller == "cpu":
            return {"cpu.max": "max 100000\n", "cpu.weight": "100\n", "cpu.weight.nice": "0\n",
                    "cpu.idle": "0\n"}
        if controller == "cpuset":
            return {"cpuset.cpus": "\n", "cpuset.mems": "\n",
                    "cpuset.cpus.effective": (parent / "cpuset.cpus.effective").read_text(),
                    "cpuset.mems.effective": (parent / "cpuset.mems.effective").read_text(),
                    "cpuset.cpus.partition": "member\n"}
        if controller == "io":
            files = {"io.max": "", "io.weight": "default 100\n", "io.stat": ""}
            if self.bfq:
                files["io.bfq.weight"] = "default 100\n"
            return files
        if controller == "memory":
            files = {
                "memory.max": "max\n", "memory.high": "max\n", "memory.low": "0\n",
                "memory.min": "0\n", "memory.current": "0\n", "memory.peak": "0\n",
                "memory.oom.group": "0\n", "memory.stat": "anon 0\n",
                "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
                "memory.events.local": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
                                       "oom_group_kill 0\n",
            }
            if self.swap:
                files.update({"memory.swap.max": "max\n", "memory.swap.current": "0\n",
                              "memory.swap.high": "max\n"})
            return files
        if controller == "hugetlb":
            files = {}
            for size in HUGE_PAGE_SIZES:
                files.update({f"hugetlb.{size}.max": "max\n", f"hugetlb.{size}.current": "0\n",
                              f"hugetlb.{size}.events": "max 0\n"})
            return files
        if controller in ("misc", "rdma"):
            return {f"{controller}.max": "", f"{controller}.current": ""}
        if controller == "pids":
            return {"pids.max": "max\n", "pids.current": "0\n", "pids.peak": "0\n",
                    "pids.events": "max 0\n"}
        return {}

    def make_dir(self, path: Path) -> None:
        path = Path(path)
        os.mkdir(path)  # EEXIST, ENOENT as the kernel
        self.mkdirs.append(self.rel(path))
        enabled = (path.parent / "cgroup.subtree_control").read_text().split()
        frozen = self._effective_freeze(path.parent)
        files = {
            "cgroup.controllers": " ".join(enabled) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.procs": "",
            "cgroup.threads": "",
            "cgroup.events": f"populated 0\nfrozen {frozen}\n",
            "cgroup.freeze": "0\n",
            "cgroup.type": "domain\n",
            "cgroup.max.depth": "max\n",
            "cgroup.max.descendants": "max\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        }
        if self.cgroup_kill:
            files["cgroup.kill"] = ""
        for controller in enabled:
            files.update(self._controller_files(controller, path.parent))
        if "cpu" in enabled:
            files["cpu.stat"] += ("nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
                                  "nr_bursts 0\nburst_usec 0\n")
        for name, text in files.items():
            (path / name).write_text(text)

    def remove_dir(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        if any(p.is_dir() for p in path.iterdir()) or (path / "cgroup.procs").read_text():
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        for p in path.iterdir():
            p.unlink()
        os.rmdir(path)

    def _fail(self, path: Path, value: str, code: int) -> CgroupError:
        return fs.error(f"cannot write {value!r} to {path}: {os.strerror(code)}",
                        path=path, errno=code, value=value)

    def _subtree(self, path: Path) -> list[Path]:
        return [path] + [p for p in path.rglob("*") if p.is_dir()]

    def _effective_freeze(self, path: Path) -> int:
        while path != self.root.parent and path != self.root:
            freeze = path / "cgroup.freeze"
            if freeze.exists() and freeze.read_text().strip() == "1":
                return 1
            path = path.parent
        return 0

    def _set_event(self, path: Path, key: str, value: int) -> None:
        events = path / "cgroup.events"
        if not events.exists():
            return
        lines = [f"{key} {value}" if line.split()[0] == key else line
                 for line in events.read_text().splitlines()]
        events.write_text("\n".join(lines) + "\n")

    def _update_populated(self, path: Path) -> None:
        for d in [path, *path.parents]:
            if d == self.root or self.root not in d.parents:
                break
            populated = any((p / "cgroup.procs").read_text() for p in self._subtree(d))
            self._set_event(d, "populated", int(populated))

    def write(self, path: Path, value: str) -> None:
        path = Path(path)
        self.writes.append((self.rel(path), value))
        if not path.exists():
            raise self._fail(path, value, errno.ENOENT)
        handler = getattr(self, "_w_" + path.name.replace(".", "_"), None)
        if handler is None:
            if path.name.startswith("hugetlb.") and path.name.endswith(".max"):
                handler = self._w_max_or_number
            else:
                path.write_text(value + "\n")
                return
        handler(path, value.strip())

    def _w_max_or_number(self, path: Path, value: str) -> None:
        if not (value == "max" or value.isdigit()):
            raise self._fail(path, value, errno.EINVAL)
        path.write_text(value + "\n")

    _w_memory_max = _w_memory_high = _w_memory_low = _w_memory_min = _w_max_or_number
    _w_memory_swap_max = _w_pids_max = _w_max_or_number

    def _w_cgroup_subtree_control(self, path: Path, value: str) -> None:
        available = (path.parent / "cgroup.controllers").read_text().split()
        enabled = set(path.read_text().split())
        added = []
        for token in value.split():
            if token[:1] not in "+-" or token[1:] not in available:
                raise self._fail(path, value, errno.ENOENT)
            if token[0] == "+" and token[1:] not in enabled:
                added.append(token[1:])
                enabled.add(token[1:])
            elif token[0] == "-":
                enabled.discard(token[1:])
        cgroup = path.parent
        if added and cgroup != self.root and (cgroup / "cgroup.procs").read_text():
            raise self._fail(path, value, errno.EBUSY)  # no internal processes
        path.write_text(" ".join(c for c in ORDER if c in enabled) + "\n")
        for child in (p for p in cgroup.iterdir() if p.is_dir()):
            (child / "cgroup.controllers").write_text(path.read_text())
            for controller in added:
                for name, text in self._controller_files(controller, cgroup).items():
                    (child / name).write_text(text)

    def _w_cgroup_procs(self, path: Path, value: str) -> None:
        if not value.isdigit():
            raise self._fail(path, value, errno.EINVAL)
        path.write_text(path.read_text() + value + "\n")
        self._update_populated(path.parent)

    def _w_cgroup_kill(self, path: Path, value: str) -> None:
        if value != "1":
            raise self._fail(path, value, errno.EINVAL)
        for d in self._subtree(path.parent):
            (d / "cgroup.procs").write_text("")
        self._update_populated(path.parent)

    def _w_cgroup_freeze(self, path: Path, value: str) -> None:
        if value not in ("0", "1"):
            raise self._fail(path, value, errno.EINVAL)
        path.write_text(value + "\n")
        if self.stuck_freezing and value == "1":
            return  # a task that never reaches the freezer trap
        for d in self._subtree(path.parent):
            self._set_event(d, "frozen", self._effective_freeze(d))

    def _w_cpu_max(self, path: Path, value: str) -> None:
        parts = value.split()
        quota = parts[0] if parts else ""
        period = parts[1] if len(parts) > 1 else path.read_text().split()[1]
        ok = (len(parts) in (1, 2) and period.isdigit() and 1000 <= int(period) <= 1_000_000
              and (quota == "max" or (quota.isdigit() and int(quota) >= 1000)))
        if not ok:
            raise self._fail(path, value, errno.EINVAL)
        path.write_text(f"{quota} {period}\n")

    def _w_cpu_weight(self, path: Path, value: str) -> None:
        if not value.isdigit():
            raise self._fail(path, value, errno.EINVAL)
        if not 1 <= int(value) <= 10_000:
            raise self._fail(path, value, errno.ERANGE)
        path.write_text(value + "\n")

    def _cpuset(self, path: Path, value: str, kind: str) -> None:
        wanted = _cpu_list(value)
        allowed = _cpu_list((path.parent.parent / f"cpuset.{kind}.effective").read_text())
        if wanted is None or allowed is None or not wanted <= allowed:
            raise self._fail(path, value, errno.EINVAL)
        path.write_text(value + "\n")
        (path.parent / f"cpuset.{kind}.effective").write_text(value + "\n")

    def _w_cpuset_cpus(self, path: Path, value: str) -> None:
        self._cpuset(path, value, "cpus")

    def _w_cpuset_mems(self, path: Path, value: str) -> None:
        self._cpuset(path, value, "mems")

    def _w_io_max(self, path: Path, value: str) -> None:
        parts = value.split()
        if not parts or parts[0] not in BLOCK_DEVICES:
            raise self._fail(path, value, errno.ENODEV)
        lines = {line.split()[0]: dict(item.split("=") for item in line.split()[1:])
                 for line in path.read_text().splitlines() if line.strip()}
        current = lines.get(parts[0], dict.fromkeys(_IO_KEYS, "max"))
        for item in parts[1:]:
            key, _, number = item.partition("=")
            if key not in _IO_KEYS or not (number == "max" or number.isdigit()):
                raise self._fail(path, value, errno.EINVAL)
            current[key] = number
        lines[parts[0]] = current
        path.write_text("".join(
            f"{dev} " + " ".join(f"{k}={v[k]}" for k in _IO_KEYS) + "\n"
            for dev, v in sorted(lines.items()) if any(v[k] != "max" for k in _IO_KEYS)))

    def _weight_file(self, path: Path, value: str, high: int) -> None:
        parts = value.split()
        if len(parts) == 1:
            parts = ["default", parts[0]]
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= high:
            raise self._fail(path, value, errno.EINVAL if len(parts) != 2 else errno.ERANGE)
        if parts[0] != "default" and parts[0] not in BLOCK_DEVICES:
            raise self._fail(path, value, errno.ENODEV)
        lines = dict(line.split() for line in path.read_text().splitlines() if line.strip())
        lines[parts[0]] = parts[1]
        path.write_text("".join(f"{k} {v}\n" for k, v in lines.items()))

    def _w_io_weight(self, path: Path, value: str) -> None:
        self._weight_file(path, value, 10_000)

    def _w_io_bfq_weight(self, path: Path, value: str) -> None:
        self._weight_file(path, value, 1000)
