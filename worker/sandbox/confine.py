"""Least privilege for a process that runs a tenant's model.

``confine()`` is called by a model host (and the upload probe) after it has read its
model files into memory and before it parses or runs any of them. From then on the
process cannot open, create, rename or delete a file, create a socket or a process,
trace or signal another process, or reach kernel facilities that bypass those checks
(io_uring, bpf, userfaultfd, SysV shared memory, pidfd_getfd, ...). Three layers,
each enough on its own for files:

- **Landlock** (where the kernel has it; ABI 7 on this project's machines): a ruleset
  that handles every filesystem right and grants none, TCP bind/connect (ABI >= 4) and,
  from ABI 6, abstract unix sockets and signals outside the process;
- **seccomp**: a BPF filter over the syscall number (and clone's flags, ioctl's request
  and tgkill's target) that answers EPERM for the syscalls above and kills the process
  for a foreign architecture; installed with TSYNC so every thread is covered;
- **resource limits**: an address-space cap (the model's memory limit), no core files,
  and, when running as root, a switch to the ``nobody`` user first.

Seccomp is required: without it ``confine`` raises, and the worker refuses to start.
The filter is a deny-list of syscall numbers, not an allow-list, because the
runtimes' own syscalls (futexes, mmap variants, clock and scheduling calls) differ by
library version; what it denies is every way to name a file, a peer or a process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
from dataclasses import dataclass

# ---------------------------------------------------------------- syscall numbers

_COMMON_DENIED = {
    # files by name
    "openat", "openat2", "name_to_handle_at", "open_by_handle_at", "unlinkat", "renameat",
    "renameat2", "mkdirat", "linkat", "symlinkat", "fchmod", "fchmodat", "fchmodat2", "fchown",
    "fchownat", "truncate", "ftruncate", "mknodat", "setxattr", "lsetxattr", "fsetxattr",
    "removexattr", "lremovexattr", "fremovexattr", "acct", "quotactl",
    # network and IPC endpoints
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "mq_open",
    "shmget", "shmat", "shmctl", "msgget", "semget",
    # processes
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kill", "tkill",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "setns", "unshare",
    # the kernel's side doors
    "mount", "umount2", "pivot_root", "chroot", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "settimeofday", "sethostname", "setdomainname", "syslog", "vhangup",
    "personality", "fanotify_init", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "process_madvise",
}
_X86_64_ONLY = {"open", "creat", "unlink", "rename", "mkdir", "rmdir", "link", "symlink", "chmod",
                "chown", "lchown", "mknod", "fork", "vfork", "uselib", "iopl", "ioperm"}

_NUMBERS = {
    "x86_64": {
        "open": 2, "creat": 85, "unlink": 87, "rename": 82, "mkdir": 83, "rmdir": 84, "link": 86,
        "symlink": 88, "chmod": 90, "chown": 92, "lchown": 94, "mknod": 133, "fork": 57,
        "vfork": 58, "uselib": 134, "iopl": 172, "ioperm": 173,
        "openat": 257, "openat2": 437, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "unlinkat": 263, "renameat": 264, "renameat2": 316, "mkdirat": 258, "linkat": 265,
        "symlinkat": 266, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "fchown": 93,
        "fchownat": 260, "truncate": 76, "ftruncate": 77, "mknodat": 259, "setxattr": 188,
        "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
        "fremovexattr": 199, "acct": 163, "quotactl": 179,
        "socket": 41, "socketpair": 53, "bind": 49, "listen": 50, "accept": 43, "accept4": 288,
        "connect": 42, "mq_open": 240, "shmget": 29, "shmat": 30, "shmctl": 31, "msgget": 68,
        "semget": 64,
        "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310,
        "process_vm_writev": 311, "kill": 62, "tkill": 200, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "setns": 308, "unshare": 272,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
        "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168,
        "settimeofday": 164, "sethostname": 170, "setdomainname": 171, "syslog": 103,
        "vhangup": 153, "personality": 135, "fanotify_init": 300, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "process_madvise": 440,
        # special-cased below
        "clone": 56, "clone3": 435, "ioctl": 16, "tgkill": 234, "seccomp": 317,
    },
    "aarch64": {
        "openat": 56, "openat2": 437, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "unlinkat": 35, "renameat": 38, "renameat2": 276, "mkdirat": 34, "linkat": 37,
        "symlinkat": 36, "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchown": 55,
        "fchownat": 54, "truncate": 45, "ftruncate": 46, "mknodat": 33, "setxattr": 5,
        "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15,
        "fremovexattr": 16, "acct": 89, "quotactl": 60,
        "socket": 198, "socketpair": 199, "bind": 200, "listen": 201, "accept": 202,
        "accept4": 242, "connect": 203, "mq_open": 180, "shmget": 194, "shmat": 196,
        "shmctl": 195, "msgget": 186, "semget": 190,
        "execve": 221, "execveat": 281, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "kill": 129, "tkill": 130, "pidfd_open": 434,
        "pidfd_getfd": 438, "pidfd_send_signal": 424, "setns": 268, "unshare": 97,
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "keyctl": 219, "add_key": 217, "request_key": 218,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
        "kexec_file_load": 294, "reboot": 142, "swapon": 224, "swapoff": 225,
        "settimeofday": 170, "sethostname": 161, "setdomainname": 162, "syslog": 116,
        "vhangup": 58, "personality": 92, "fanotify_init": 262, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "process_madvise": 440,
        "clone": 220, "clone3": 435, "ioctl": 29, "tgkill": 131, "seccomp": 277,
    },
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# ---------------------------------------------------------------- BPF

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x45, 0x06
_SECCOMP_RET_KILL_PROCESS, _SECCOMP_RET_ERRNO, _SECCOMP_RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_OFF_NR, _OFF_ARCH = 0, 4


def _arg_low(i: int) -> int:
    return 16 + 8 * i  # seccomp_data.args[i], low 32 bits (little endian)


_CLONE_THREAD = 0x00010000
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
_X32_BIT = 0x40000000


def _filter(arch: str, own_pid: int) -> list[tuple[int, int, int, int]]:
    nums = _NUMBERS[arch]
    denied_names = _COMMON_DENIED | (_X86_64_ONLY if arch == "x86_64" else set())
    denied = sorted({nums[n] for n in denied_names if n in nums})
    eperm = _SECCOMP_RET_ERRNO | errno.EPERM
    enosys = _SECCOMP_RET_ERRNO | errno.ENOSYS
    prog: list[tuple[int, int, int, int]] = [
        (_BPF_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS),
        (_BPF_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch == "x86_64":  # the x32 ABI reaches the same kernel code under other numbers
        prog += [(_BPF_JSET_K, 0, 1, _X32_BIT), (_BPF_RET_K, 0, 0, eperm)]
    for nr in denied:
        prog += [(_BPF_JEQ_K, 0, 1, nr), (_BPF_RET_K, 0, 0, eperm)]
    # clone3 hides its flags behind a pointer: ENOSYS makes glibc fall back to clone
    prog += [(_BPF_JEQ_K, 0, 1, nums["clone3"]), (_BPF_RET_K, 0, 0, enosys)]
    # a second seccomp filter is harmless, but nothing of ours installs one later
    prog += [(_BPF_JEQ_K, 0, 1, nums["seccomp"]), (_BPF_RET_K, 0, 0, eperm)]
    # clone: threads only (CLONE_THREAD), never a new process
    prog += [
        (_BPF_JEQ_K, 0, 4, nums["clone"]),
        (_BPF_LD_W_ABS, 0, 0, _arg_low(0)),
        (_BPF_JSET_K, 1, 0, _CLONE_THREAD),
        (_BPF_RET_K, 0, 0, eperm),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    # ioctl: no typing into the terminal an inherited descriptor may point at
    prog += [
        (_BPF_JEQ_K, 0, 5, nums["ioctl"]),
        (_BPF_LD_W_ABS, 0, 0, _arg_low(1)),
        (_BPF_JEQ_K, 2, 0, _TIOCSTI),
        (_BPF_JEQ_K, 1, 0, _TIOCLINUX),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        (_BPF_RET_K, 0, 0, eperm),
    ]
    # tgkill: signals to this process's own threads only (abort() and raise() use it)
    prog += [
        (_BPF_JEQ_K, 0, 4, nums["tgkill"]),
        (_BPF_LD_W_ABS, 0, 0, _arg_low(0)),
        (_BPF_JEQ_K, 1, 0, own_pid),
        (_BPF_RET_K, 0, 0, eperm),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    prog.append((_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW))
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_PR_SET_NO_NEW_PRIVS, _PR_SET_DUMPABLE = 38, 4
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1


class SandboxUnavailable(RuntimeError):
    """This kernel or architecture cannot confine a model host."""


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"{what} failed: {os.strerror(err)}")
    return ret


def _install_seccomp(arch: str) -> None:
    prog = _filter(arch, os.getpid())
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.syscall(_NUMBERS[arch]["seccomp"], _SECCOMP_SET_MODE_FILTER,
                         _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)), "seccomp")


# ---------------------------------------------------------------- Landlock

_LL_CREATE, _LL_RESTRICT = 444, 446
_LL_VERSION_FLAG = 1
# access_fs bits by ABI: 1 -> 13 rights, 2 -> +REFER, 3 -> +TRUNCATE, 5 -> +IOCTL_DEV
_LL_FS_BITS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1,
               5: (1 << 16) - 1}
_LL_NET_BITS = 0b11  # BIND_TCP, CONNECT_TCP (ABI >= 4)
_LL_SCOPE_BITS = 0b11  # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI >= 6)


class _LandlockRuleset(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    ret = _libc.syscall(_LL_CREATE, None, 0, _LL_VERSION_FLAG)
    return max(int(ret), 0)


def _install_landlock(abi: int) -> None:
    attr = _LandlockRuleset(_LL_FS_BITS[min(abi, 5)], _LL_NET_BITS if abi >= 4 else 0,
                            _LL_SCOPE_BITS if abi >= 6 else 0)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    fd = _check(_libc.syscall(_LL_CREATE, ctypes.byref(attr), size, 0), "landlock_create_ruleset")
    try:
        _check(_libc.syscall(_LL_RESTRICT, fd, 0), "landlock_restrict_self")
    finally:
        os.close(fd)


# ---------------------------------------------------------------- confine

NOBODY = 65534


@dataclass(frozen=True, slots=True)
class Confinement:
    seccomp: bool
    landlock_abi: int
    memory_limit_bytes: int | None
    uid: int


def confine(memory_limit_bytes: int | None = None) -> Confinement:
    """Confine this process for good (see the module docstring). Call it with only the
    descriptors the process needs left open; raises SandboxUnavailable where seccomp
    cannot be installed."""
    arch = platform.machine()
    if arch not in _NUMBERS:
        raise SandboxUnavailable(f"no seccomp filter for architecture {arch}")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    if os.getuid() == 0:  # root inside the sandbox could still signal or trace through gaps
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    _check(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    abi = landlock_abi()
    if abi:
        _install_landlock(abi)
    _install_seccomp(arch)
    return Confinement(True, abi, memory_limit_bytes, os.getuid())


def address_space_bytes() -> int:
    """This process's mapped address space now (VmSize), the base a memory limit adds to."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
