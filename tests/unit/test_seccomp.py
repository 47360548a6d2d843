"""runtime/linux/seccomp.py: runtime-spec seccomp objects compiled by libseccomp, each
filter loaded in a forked child (``no_new_privs`` first, so no privilege is needed) and
judged by what the kernel then does to real syscalls."""

from __future__ import annotations

import errno
import os
import pickle
import signal
from collections.abc import Callable

import pytest
from pytest_containers.runtime.linux import syscalls as sc

from pytest_containers.exceptions import InvalidOptionError

pytest.importorskip("pyseccomp", reason="needs pyseccomp and libseccomp.so.2")
from pytest_containers.runtime.linux import seccomp  # noqa: E402

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="the filters name x86_64 architectures")


def in_filtered_child(profile: dict, probe: Callable[[], int]) -> int:
    """Compile ``profile``, fork, set no_new_privs, load it, run ``probe``; the child
    exits with what ``probe`` returns. Returns the raw wait status."""
    program = seccomp.compile_filter(profile)
    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            sc.set_no_new_privs()
            seccomp.load(program)
            code = probe()
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def errno_of(call: Callable[[], object]) -> int:
    """0 when ``call`` succeeds, else its errno."""
    try:
        call()
    except OSError as exc:
        return exc.errno or 255
    return 0


def allow(**extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], **extra}


def test_errno_for_one_syscall_others_allowed(tmp_path):
    profile = allow(syscalls=[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                               "errnoRet": errno.EROFS}])

    def probe() -> int:
        denied = errno_of(lambda: os.mkdir(tmp_path / "d"))
        allowed = errno_of(lambda: (tmp_path / "f").write_text("x"))
        return 1 if (denied, allowed) == (errno.EROFS, 0) else 2

    assert os.waitstatus_to_exitcode(in_filtered_child(profile, probe)) == 1
    assert not (tmp_path / "d").exists() and (tmp_path / "f").read_text() == "x"


def test_default_errno_is_eperm_and_default_errno_ret():
    profile = allow(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}])
    program = seccomp.compile_filter(profile)
    assert program.instructions > 0 and program.flags == 0 and program.ignored == ()
    deny_all = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOTSUP,
                "syscalls": [{"names": ["exit_group", "exit", "getpid", "prctl", "seccomp",
                                        "rt_sigreturn", "rt_sigprocmask", "write"],
                              "action": "SCMP_ACT_ALLOW"}]}
    # under the deny-all filter no exception (it may allocate: mmap would fail): glibc's
    # getppid, which "cannot fail", returns the filter's -ENOTSUP as is; getpid works
    status = in_filtered_child(deny_all, lambda: 3 if os.getppid() < 0 < os.getpid() else 4)
    assert os.waitstatus_to_exitcode(status) == 3


def test_argument_comparisons():
    profile = allow(syscalls=[
        {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
         "args": [{"index": 1, "value": 1 << 40, "op": "SCMP_CMP_GE"}]},
        {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
         "args": [{"index": 0, "value": 0xFF, "valueTwo": 0x42, "op": "SCMP_CMP_MASKED_EQ"}]},
        # two conditions on one argument: runc adds one rule each (an OR)
        {"names": ["setpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EBADE,
         "args": [{"index": 0, "value": 77777, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 88888, "op": "SCMP_CMP_EQ"}]},
    ])

    fd = os.open("/dev/zero", os.O_RDONLY)

    def probe() -> int:
        results = (
            errno_of(lambda: os.lseek(fd, 1 << 41, os.SEEK_SET)),  # 64-bit GE matches
            errno_of(lambda: os.lseek(fd, 5, os.SEEK_SET)),  # allowed
            errno_of(lambda: os.getsid(0x1242)),  # 0x1242 & 0xFF == 0x42
            errno_of(lambda: os.getsid(0x1243)),  # no match: the kernel's ESRCH
            errno_of(lambda: os.setpgid(77777, 0)),
            errno_of(lambda: os.setpgid(88888, 0)),
            errno_of(lambda: os.setpgid(99999, 0)),
        )
        expected = (errno.EACCES, 0, errno.EDOM, errno.ESRCH, errno.EBADE, errno.EBADE,
                    errno.ESRCH)
        return 0 if results == expected else 1

    try:
        assert os.waitstatus_to_exitcode(in_filtered_child(profile, probe)) == 0
    finally:
        os.close(fd)


@pytest.mark.parametrize(("action", "signo"), [
    ("SCMP_ACT_KILL_PROCESS", signal.SIGSYS),
    ("SCMP_ACT_KILL", signal.SIGSYS),
    ("SCMP_ACT_TRAP", signal.SIGSYS),
])
def test_kill_and_trap_actions(action, signo):
    profile = allow(syscalls=[{"names": ["getppid"], "action": action}])
    status = in_filtered_child(profile, lambda: os.getppid() and 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signo


def test_log_action_allows():
    profile = allow(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"],
                    syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_LOG"}])
    program = seccomp.compile_filter(profile)
    assert program.flags == sc.SECCOMP_FILTER_FLAG_LOG
    status = in_filtered_child(profile, lambda: 5 if os.getppid() > 0 else 6)
    assert os.waitstatus_to_exitcode(status) == 5


def test_unknown_syscall_names_are_ignored_like_runc():
    profile = allow(syscalls=[{"names": ["no_such_syscall", "mkdir", "no_such_syscall"],
                               "action": "SCMP_ACT_ERRNO"}])
    program = seccomp.compile_filter(profile)
    assert program.ignored == ("no_such_syscall",)


def test_rule_with_the_default_action_is_skipped():
    same = seccomp.compile_filter(allow(syscalls=[{"names": ["mkdir"],
                                                   "action": "SCMP_ACT_ALLOW"}]))
    none = seccomp.compile_filter(allow())
    assert same.bpf == none.bpf


def test_other_architectures_add_their_branches():
    native = seccomp.compile_filter(allow(syscalls=[{"names": ["mkdir"],
                                                     "action": "SCMP_ACT_ERRNO"}]))
    multi = seccomp.compile_filter(allow(
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]))
    assert multi.instructions > native.instructions


@pytest.mark.parametrize(("profile", "field"), [
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction"),
    (allow(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]),
     "linux.seccomp.architectures[1]"),
    (allow(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "linux.seccomp.flags[0]"),
    (allow(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["rmdir"], "action": "SCMP_ACT_BLOCK"}]),
     "linux.seccomp.syscalls[1].action"),
    (allow(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]),
     "linux.seccomp.syscalls[0].errnoRet"),
    (allow(syscalls=[{"names": [], "action": "SCMP_ACT_ERRNO"}]),
     "linux.seccomp.syscalls[0].names"),
    (allow(syscalls=[{"names": ["mkdir", 5], "action": "SCMP_ACT_ERRNO"}]),
     "linux.seccomp.syscalls[0].names[1]"),
    (allow(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]),
     "linux.seccomp.syscalls[0].args[0].index"),
    (allow(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                               {"index": 1, "value": 0, "op": "SCMP_CMP_ABOUT"}]}]),
     "linux.seccomp.syscalls[0].args[1].op"),
    (allow(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]),
     "linux.seccomp.syscalls[0].args[0].value"),
])
def test_invalid_profiles_name_the_field(profile, field):
    with pytest.raises(InvalidOptionError) as info:
        seccomp.compile_filter(profile)
    assert info.value.option == field
    assert str(info.value).startswith(field)
    assert pickle.loads(pickle.dumps(info.value)).option == field


def test_load_refuses_a_malformed_program():
    with pytest.raises(OSError):
        sc.seccomp_set_mode_filter(b"\0" * 7)
