"""Control groups v1 and v2 behind one small API.

A container's cgroup is ``/ptc/<id>`` relative to each hierarchy's root
(:func:`pytest_containers.runtime.spec.cgroups_path`), or nested under a session
parent, ``/ptc/ptc-session-<pid>/<id>``. :func:`open_cgroup` returns a
:class:`CgroupV1` (one directory per controller hierarchy, e.g.
``/sys/fs/cgroup/memory/ptc/<id>``; kernel ``Documentation/admin-guide/cgroup-v1/``)
or a :class:`CgroupV2` (one directory in the unified tree; kernel
``Documentation/admin-guide/cgroup-v2.rst``). Both have the same methods:

- ``create(resources)``: mkdir and write the runtime-spec ``linux.resources``
  (config-linux.md "Control groups", a dict) or a ``Resources``; ``update(resources)``
- ``add(pid)``, ``pids(recursive=)``, ``procs_paths()``, ``self_join_paths()``,
  ``children()``, ``parent_chain()``
- ``stats()`` -> ``Stats``, ``oom_kills()``
- ``freeze()``, ``thaw()``, ``frozen``
- ``kill_all()`` (the subtree; works on a frozen cgroup), ``remove(recursive=)``

A session parent is an ordinary cgroup: ``open_cgroup("/ptc/ptc-session-<pid>")
.create(limits)``; every container under it is capped by its limits too. A
child's ``remove()`` never removes it (only parents that child's ``create()``
made, and the shared top-level ``ptc`` when empty). Its owner tears it down with
its ``kill_all()`` (every process of every child) and ``remove()`` (the child
cgroups first, as runc removes sub-cgroups).

Module layout: :mod:`.fs` (file I/O, patched by the fake-tree tests),
:mod:`.resources` (checking ``linux.resources``), :mod:`.base`, :mod:`.v1`,
:mod:`.v2`, :mod:`.host` (detect, mounted hierarchies).
"""

from .base import DEFAULT_ROOT
from .host import CGROUP2_SUPER_MAGIC, detect, hierarchies, open_cgroup, remove_everywhere
from .v1 import V1_CONTROLLERS, CgroupV1
from .v2 import V2_CONTROLLERS, CgroupV2

__all__ = [
    "CGROUP2_SUPER_MAGIC",
    "CgroupV1",
    "CgroupV2",
    "DEFAULT_ROOT",
    "V1_CONTROLLERS",
    "V2_CONTROLLERS",
    "detect",
    "hierarchies",
    "open_cgroup",
    "remove_everywhere",
]
