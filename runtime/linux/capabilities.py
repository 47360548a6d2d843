"""Linux capabilities of a container's process, applied the way runc does.

Implements runtime-spec ``config.md#linux-process`` ``capabilities``
(``bounding``, ``effective``, ``permitted``, ``inheritable``, ``ambient``:
lists of names like ``"CAP_NET_RAW"``), as runc 1.1
(``libcontainer/capabilities``, ``init_linux.go`` ``finalizeNamespace``)
applies them:

1. (parent) names to numbers: :meth:`CapabilitySets.from_config`; a name the
   kernel's headers do not define raises :class:`UnknownCapabilityError`
   (runc only warns); a defined one above the running kernel's
   ``cap_last_cap`` is left out (as runc does);
2. (child, after every mount, ``pivot_root``, hostname and cgroup step, which
   need ``CAP_SYS_ADMIN``) :meth:`~CapabilitySets.drop_bounding`;
3. :meth:`~CapabilitySets.keep_for` before ``setgroups``/``setgid``/``setuid``
   (``PR_SET_KEEPCAPS``, so a non-root user keeps the permitted set);
4. :meth:`~CapabilitySets.apply`: ``capset`` effective/permitted/inheritable,
   then the ambient set.

A missing ``capabilities`` object means every set empty (as with runc). Then
``execve`` recomputes the sets (capabilities(7)): a root process gets
``P'(permitted) = P(inheritable) | P(bounding)`` (cut down to the old permitted
set under ``noNewPrivileges``), effective equal to it; a non-root one keeps only
its ambient set, unless the file has capabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import syscalls as sc

__all__ = ["NAMES", "CapabilitySets", "UnknownCapabilityError", "last_cap", "mask_of",
           "names_of"]

#: capability names by number (``<linux/capability.h>``, 0 to ``CAP_CHECKPOINT_RESTORE``)
NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS = {name: number for number, name in enumerate(NAMES)}

#: the runtime-spec's lists, in the order runc reads them
_KINDS = ("bounding", "effective", "permitted", "inheritable", "ambient")

_last_cap: int | None = None


class UnknownCapabilityError(ValueError):
    """A capability name that Linux does not define. Fields: ``name``, ``kind`` (the
    list it is in, e.g. ``"bounding"``), ``index`` (its position in that list, -1 when
    unknown): the message names ``process.capabilities.<kind>[<index>]``."""

    def __init__(self, message: str, *, name: str = "", kind: str = "", index: int = -1) -> None:
        super().__init__(message)
        self.name = name
        self.kind = kind
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (xdist)
        return (_rebuild, (str(self), self.name, self.kind, self.index))


def _rebuild(message: str, name: str, kind: str, index: int = -1) -> UnknownCapabilityError:
    return UnknownCapabilityError(message, name=name, kind=kind, index=index)


def last_cap() -> int:
    """The running kernel's highest capability number (``/proc/sys/kernel/cap_last_cap``),
    read once per process; the highest number in :data:`NAMES` if unreadable."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last_cap = int(f.read())
        except (OSError, ValueError):
            _last_cap = len(NAMES) - 1
    return _last_cap


def mask_of(names: Sequence[str], *, kind: str = "", top: int | None = None) -> int:
    """The bit mask (bit N: capability number N) of ``names``; numbers above ``top``
    (default :func:`last_cap`) are left out. Raises :class:`UnknownCapabilityError`
    for a name not in :data:`NAMES` (or not a string), naming its list and index."""
    limit = last_cap() if top is None else top
    mask = 0
    for index, name in enumerate(names):
        number = _NUMBERS.get(name) if isinstance(name, str) else None
        if number is None:
            where = f"process.capabilities.{kind}" if kind else "capabilities"
            raise UnknownCapabilityError(f"unknown capability {name!r} in {where}[{index}]",
                                         name=str(name), kind=kind, index=index)
        if number <= limit:
            mask |= 1 << number
    return mask


def names_of(mask: int) -> list[str]:
    """The names of the bits set in ``mask``, by number."""
    return [name for number, name in enumerate(NAMES) if mask >> number & 1]


#: :meth:`CapabilitySets.from_config` results by their lists of names (a pure function)
_SETS: dict[tuple[Any, ...], CapabilitySets] = {}


@dataclass(frozen=True)
class CapabilitySets:
    """The five sets as bit masks (bit N: capability number N), computed in the parent;
    the methods only make syscalls, for the child between ``fork`` and ``exec``.

    ``drop``: the numbers to remove from the bounding set (0 to ``cap_last_cap`` not
    in ``bounding``). ``ambient_raise``: the ambient numbers that are permitted and
    inheritable; the kernel refuses any other, and runc ignores that refusal.
    """

    bounding: int = 0
    effective: int = 0
    permitted: int = 0
    inheritable: int = 0
    ambient: int = 0
    drop: tuple[int, ...] = ()
    ambient_raise: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, capabilities: Mapping[str, Any] | None, *,
                    top: int | None = None) -> CapabilitySets:
        """From ``process.capabilities`` (``None``: every set empty); ``top`` is the
        highest capability number (default :func:`last_cap`). Raises
        :class:`UnknownCapabilityError` naming the first unknown name."""
        limit = last_cap() if top is None else top
        caps = capabilities or {}
        key: tuple[Any, ...] | None
        try:  # the same lists from one container to the next: computed once
            key = (cls, limit, *(tuple(caps.get(kind) or ()) for kind in _KINDS))
            found = _SETS.get(key)
        except TypeError:  # not lists of strings: mask_of says which entry
            key = found = None
        if found is not None:
            return found
        masks = {kind: mask_of(caps.get(kind) or (), kind=kind, top=limit) for kind in _KINDS}
        raisable = masks["ambient"] & masks["permitted"] & masks["inheritable"]
        sets = cls(
            **masks,
            drop=tuple(n for n in range(limit + 1) if not masks["bounding"] >> n & 1),
            ambient_raise=tuple(n for n in range(limit + 1) if raisable >> n & 1),
        )
        if key is not None:
            if len(_SETS) >= 256:
                _SETS.clear()
            _SETS[key] = sets
        return sets

    # -- in the child ---------------------------------------------------------------

    def drop_bounding(self) -> None:
        """Remove :attr:`drop` from the bounding set (before the user changes: needs
        ``CAP_SETPCAP``)."""
        sc.capbset_drop(*self.drop)

    def keep_for(self, uid: int) -> None:
        """``PR_SET_KEEPCAPS`` before ``setuid(uid)`` when ``uid`` is not root and the
        config grants it capabilities: else the kernel clears the permitted set."""
        if uid != 0 and (self.permitted or self.inheritable):
            sc.set_keepcaps(True)

    def apply(self) -> None:
        """After the user change: ``capset`` effective, permitted, inheritable, then the
        ambient set cleared and :attr:`ambient_raise` raised."""
        sc.capset(self.effective, self.permitted, self.inheritable)
        sc.ambient_clear_all()
        for number in self.ambient_raise:
            sc.ambient_raise(number)
