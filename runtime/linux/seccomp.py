"""Seccomp: a runtime-spec ``linux.seccomp`` object compiled to a classic BPF program.

Implements runtime-spec ``config-linux.md#seccomp`` the way runc 1.1 does
(``libcontainer/seccomp/seccomp_linux.go``), with libseccomp doing the
compiling: this is the one module that imports ``pyseccomp`` (ctypes over
Debian's ``libseccomp.so.2``) and maps its errors to ours.

- :func:`compile_filter` (parent, before ``fork``): checks every field, builds
  the libseccomp filter and exports it as BPF bytes (``seccomp_export_bpf``).
  Errors are :class:`~pytest_containers.exceptions.InvalidOptionError` (a
  ``ValueError``) whose ``option`` names the field, e.g.
  ``linux.seccomp.syscalls[2].action``.
- :func:`load` (child, between ``fork`` and ``exec``): one
  ``seccomp(SECCOMP_SET_MODE_FILTER)`` of those bytes; no parsing, no import.

As runc: a syscall name libseccomp does not know is ignored (an older kernel
or libseccomp; it is listed in :attr:`SeccompProgram.ignored`); a rule whose
action equals the default action is skipped; conditions on the same argument
index become one rule each (OR), else one rule with all of them (AND);
``SCMP_ACT_ERRNO`` and ``SCMP_ACT_TRACE`` return ``errnoRet`` (default EPERM);
``SCMP_ACT_KILL`` kills the thread; the filter's own architecture is always
in it, ``architectures`` adds others (their syscalls translated by
libseccomp), any other architecture kills the thread. Not supported:
``SCMP_ACT_NOTIFY`` (``listenerPath``: needs an agent) and runc's ENOSYS
stub for syscalls newer than the profile (``patchbpf``): such calls get the
default action.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_containers.exceptions import InvalidOptionError

from . import syscalls as sc

__all__ = ["ACTIONS", "ARCHITECTURES", "FLAGS", "OPERATORS", "SeccompProgram",
           "compile_filter", "load"]

#: runtime-spec action names -> libseccomp action bases (``<seccomp.h>`` SCMP_ACT_*);
#: ERRNO and TRACE carry ``errnoRet`` in their low 16 bits
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,  # = KILL_THREAD
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_RET = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

#: runtime-spec operator names -> ``enum scmp_compare``
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# <linux/audit.h>: AUDIT_ARCH_* = EM_* | 64-bit | little-endian | (MIPS n32 convention)
_B64, _LE, _N32 = 0x80000000, 0x40000000, 0x20000000
#: runtime-spec architecture names -> ``AUDIT_ARCH_*`` (libseccomp's ``SCMP_ARCH_*``)
ARCHITECTURES: dict[str, int] = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _B64 | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _B64 | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _B64,
    "SCMP_ARCH_MIPS64N32": 8 | _B64 | _N32,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _B64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _B64 | _LE | _N32,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _B64,
    "SCMP_ARCH_PPC64LE": 21 | _B64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _B64,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _B64,
    "SCMP_ARCH_RISCV64": 243 | _B64 | _LE,
}

#: runtime-spec flag names -> ``SECCOMP_FILTER_FLAG_*`` passed to seccomp(2). TSYNC is
#: accepted and not passed: the container init has one thread (runc does the same).
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 0,
    "SECCOMP_FILTER_FLAG_LOG": sc.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": sc.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
}

_U64 = (1 << 64) - 1
_MAX_ERRNO = 0xFFFF
#: libseccomp's ``__NR_SCMP_ERROR``: the name is unknown to it
_NR_UNKNOWN = -1
#: one rule: (its field, syscall name, action, conditions (index, op, value, valueTwo))
_Rule = tuple[str, str, int, list[tuple[int, int, int, int]]]


@dataclass(frozen=True)
class SeccompProgram:
    """A compiled filter: ``bpf`` is the ``struct sock_filter`` array (8 bytes an
    instruction, native byte order) for ``seccomp(SECCOMP_SET_MODE_FILTER, flags)``;
    ``ignored`` the syscall names that were left out as unknown, in config order."""

    bpf: bytes
    flags: int = 0
    ignored: tuple[str, ...] = ()

    @property
    def instructions(self) -> int:
        """The program's length in BPF instructions (the kernel takes at most 4096)."""
        return len(self.bpf) // 8


def _bad(field: str, value: Any, why: str) -> InvalidOptionError:
    return InvalidOptionError(f"{field}: {why} (got {value!r})", option=field, value=value)


def _uint(value: Any, field: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise _bad(field, value, f"must be an integer from 0 to {top}")
    return value


def _action(name: Any, ret: Any, field: str, ret_field: str) -> int:
    base = ACTIONS.get(name) if isinstance(name, str) else None
    if base is None:
        if name == "SCMP_ACT_NOTIFY":
            raise _bad(field, name, "SCMP_ACT_NOTIFY needs a seccomp agent; not supported")
        raise _bad(field, name, "unknown action; one of " + ", ".join(sorted(ACTIONS)))
    if name in _WITH_RET:
        code = errno.EPERM if ret is None else _uint(ret, ret_field, _MAX_ERRNO)
        return base | code
    if ret is not None:  # runtime-spec: "the runtime MUST print an error and fail"
        raise _bad(ret_field, ret, f"{name} returns no errno (only SCMP_ACT_ERRNO and "
                   "SCMP_ACT_TRACE do)")
    return base


def _list(value: Any, field: str) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _bad(field, value, "must be an array")
    return value


def _libseccomp() -> Any:
    """The ``pyseccomp`` module, or ``InvalidOptionError`` saying what is missing."""
    try:
        import pyseccomp
    except ImportError as exc:  # RuntimeError too: pyseccomp raises it without the .so
        raise InvalidOptionError(
            "linux.seccomp needs the pyseccomp package (pip install pyseccomp)",
            option="linux.seccomp", value=None) from exc
    except RuntimeError as exc:
        raise InvalidOptionError(
            f"linux.seccomp needs libseccomp.so.2 (Debian: libseccomp2): {exc}",
            option="linux.seccomp", value=None) from exc
    return pyseccomp


def compile_filter(seccomp: Mapping[str, Any], *, field: str = "linux.seccomp") -> SeccompProgram:
    """Compile the runtime-spec ``linux.seccomp`` object ``seccomp`` (``defaultAction``,
    ``defaultErrnoRet``, ``architectures``, ``flags``, ``syscalls`` of ``{names,
    action, errnoRet, args: [{index, value, valueTwo, op}]}``) for this machine.

    Raises :class:`~pytest_containers.exceptions.InvalidOptionError` naming the field
    (``option``), e.g. ``linux.seccomp.syscalls[0].args[1].op``, for a value that is
    missing, of the wrong type or unknown; the libseccomp error too, with its errno.
    """
    if not isinstance(seccomp, Mapping):
        raise _bad(field, seccomp, "must be an object")
    default = _action(seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"),
                      f"{field}.defaultAction", f"{field}.defaultErrnoRet")
    flags = 0
    for i, flag in enumerate(_list(seccomp.get("flags"), f"{field}.flags")):
        bit = FLAGS.get(flag) if isinstance(flag, str) else None
        if bit is None:
            raise _bad(f"{field}.flags[{i}]", flag, "unknown flag; one of " + ", ".join(FLAGS))
        flags |= bit
    arches = []
    for i, arch in enumerate(_list(seccomp.get("architectures"), f"{field}.architectures")):
        number = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
        if number is None:
            raise _bad(f"{field}.architectures[{i}]", arch, "unknown architecture")
        arches.append((i, number))
    rules: list[_Rule] = []
    for i, call in enumerate(_list(seccomp.get("syscalls"), f"{field}.syscalls")):
        where = f"{field}.syscalls[{i}]"
        if not isinstance(call, Mapping):
            raise _bad(where, call, "must be an object")
        action = _action(call.get("action"), call.get("errnoRet"), f"{where}.action",
                         f"{where}.errnoRet")
        names = _list(call.get("names"), f"{where}.names")
        if not names:
            raise _bad(f"{where}.names", call.get("names"), "must name at least one syscall")
        for j, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise _bad(f"{where}.names[{j}]", name, "must be a syscall name")
        conds = []
        for j, arg in enumerate(_list(call.get("args"), f"{where}.args")):
            at = f"{where}.args[{j}]"
            if not isinstance(arg, Mapping):
                raise _bad(at, arg, "must be an object")
            op_name = arg.get("op")
            op = OPERATORS.get(op_name) if isinstance(op_name, str) else None
            if op is None:
                raise _bad(f"{at}.op", arg.get("op"),
                           "unknown operator; one of " + ", ".join(OPERATORS))
            conds.append((_uint(arg.get("index"), f"{at}.index", 5), op,
                          _uint(arg.get("value", 0), f"{at}.value", _U64),
                          _uint(arg.get("valueTwo", 0), f"{at}.valueTwo", _U64)))
        if action != default:  # runc: a rule with the default action is redundant
            rules.extend((where, name, action, conds) for name in names)
    return _build(default, flags, arches, rules, field)


def _build(default: int, flags: int, arches: list[tuple[int, int]], rules: list[_Rule],
           field: str) -> SeccompProgram:
    lib = _libseccomp()
    try:
        filt = lib.SyscallFilter(default)
    except OSError as exc:
        raise _bad(f"{field}.defaultAction", default, f"libseccomp refused it: {exc}") from exc
    for i, arch in arches:
        try:
            filt.add_arch(arch)
        except OSError as exc:
            if exc.errno != errno.EEXIST:  # the native one is there already
                raise _bad(f"{field}.architectures[{i}]", arch,
                           f"libseccomp refused it: {exc}") from exc
    if len(rules) > 32:  # runc: libseccomp's binary tree for long rule sets
        try:
            filt.set_attr(lib.Attr.CTL_OPTIMIZE, 2)
        except OSError:
            pass  # libseccomp < 2.5: the linear program is as correct
    ignored: list[str] = []
    for where, name, action, conds in rules:
        number = lib.resolve_syscall(lib.Arch.NATIVE, name)
        if number == _NR_UNKNOWN:
            if name not in ignored:
                ignored.append(name)
            continue
        # conditions on one argument index: one rule each (an OR), as runc does
        indexes = [c[0] for c in conds]
        groups = [[c] for c in conds] if len(set(indexes)) < len(indexes) else [conds]
        for group in groups:
            try:
                filt.add_rule(action, number, *(lib.Arg(*c) for c in group))
            except OSError as exc:
                raise InvalidOptionError(
                    f"{where}: libseccomp refused the rule for {name!r}: {exc}",
                    option=where, value=name) from exc
    fd = os.memfd_create("ptc-seccomp", os.MFD_CLOEXEC)
    try:
        with open(fd, "w+b", closefd=False) as out:
            filt.export_bpf(out)
        bpf = os.pread(fd, 1 << 20, 0)
    except OSError as exc:
        raise InvalidOptionError(f"{field}: libseccomp could not export the filter: {exc}",
                                 option=field, value=None) from exc
    finally:
        os.close(fd)
    if len(bpf) // 8 > 4096:
        raise InvalidOptionError(
            f"{field}: the filter has {len(bpf) // 8} BPF instructions, the kernel takes "
            "at most 4096", option=field, value=None)
    return SeccompProgram(bpf=bpf, flags=flags, ignored=tuple(ignored))


def load(program: SeccompProgram) -> None:
    """Install ``program`` on the calling thread (between ``fork`` and ``exec``): needs
    ``no_new_privs`` or ``CAP_SYS_ADMIN``. Raises ``OSError`` (EACCES without either,
    EINVAL for a flag the kernel does not know)."""
    sc.seccomp_set_mode_filter(program.bpf, program.flags)
