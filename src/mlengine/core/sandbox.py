"""Confining untrusted code: a Landlock filesystem sandbox, no capabilities, and an
allow-listed environment, for the processes that run user code (trainer replicas).

Contract
--------
- A :class:`SandboxPolicy` is plain data (JSON on the supervisor's command line), computed by
  the control plane from a job's paths; :meth:`SandboxPolicy.confinement` turns it into
  kernel rules *on the machine where the replica runs* (the local machine or a Ray node), and
  :meth:`Confinement.enter` applies them to the calling process, irreversibly, for it and
  everything it starts. The supervisor calls ``enter`` in the trainer's process between
  ``fork`` and ``exec`` (``preexec_fn``), so the supervisor itself stays free to write the
  replica's log and exit status.
- Reading: the whole filesystem **except** the ``hidden`` hierarchies (the server's home, its
  database, credentials) and ``/dev`` (only :data:`DEVICES` are reachable there: ``/dev``
  holds the raw disks, which would give root every file back). Landlock is an allow-list, so
  "all but" is expanded: :func:`plan_rules` grants every child of each ancestor of a hidden
  path, except the child that leads to it (symbolic links are skipped: what they point to is
  governed by where it lives). Consequence: files and directories *created after* the replica
  started, directly inside an ancestor of a hidden path (e.g. in ``/tmp`` when ``MLE_HOME``
  is ``/tmp/x``), are neither readable nor writable by the replica.
- ``readable`` and ``writable`` entries are exceptions that apply even inside hidden
  hierarchies (the job's environment, its private directories under ``MLE_HOME/jobs``): the
  caller vouches for them. Writable entries that contain a hidden path are carved the same
  way. ``private`` directories are created (mode 0700) before the rules are built, and are
  writable.
- Writable rights never include creating device nodes. Entries that do not exist when the
  rules are built are skipped (Landlock rules name existing files).
- Capabilities: :meth:`Confinement.enter` also empties the capability sets, the bounding set
  (when permitted) and the ambient set, and sets ``no_new_privs``. Landlock confines root's
  file access, but a process that keeps root's capabilities could still load a kernel module,
  reboot the machine or read raw I/O ports; without them, uid 0 is an ordinary user whose
  files happen to be root's.
- Other processes: a Landlock domain cannot ptrace (so cannot read ``/proc/<pid>/environ``,
  ``mem``, ``fd/``) any process outside it, and from ABI 6 cannot signal one either
  (``SCOPE_SIGNAL``). Abstract unix sockets are *not* scoped: NCCL's intra-node transport uses
  them between the replicas of a job, which are separate domains.
- Not covered (know these): ``stat`` of hidden files (metadata is not an access right);
  connecting to *named* unix sockets below hidden paths before ABI 9 (``RESOLVE_UNIX``); TCP
  (the replica can reach the API, which asks for a token); bind mounts that expose a hidden
  file under a second path.
- The environment: :func:`replica_environment` keeps, of the host's environment, only the
  names :data:`INHERITED_ENV` and the configured extras match (never the server's
  ``MLE_*``, database URL, tokens or cloud credentials), then adds the job's own variables.

Library: `landlockpy <https://pypi.org/project/landlockpy/>`_ (maintained, typed, handles
ABI 1 to 11 with best effort, scopes and restrict flags). Capabilities are a few ``prctl`` /
``capset`` calls through ctypes, which no Landlock library covers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: What a replica inherits from the environment of the machine that starts it (names or
#: ``PREFIX*`` patterns): locale, time zone, search paths, CA bundles and GPU selection. The job's own
#: variables (``TF_CONFIG``...) come on top; ``HOME`` and ``TMPDIR`` are set by the control plane.
INHERITED_ENV: tuple[str, ...] = (
    "PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "LD_LIBRARY_PATH", "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
    "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
)

#: Entries of ``/dev`` a replica may use (glob patterns); the rest of ``/dev`` is hidden.
DEVICES: tuple[str, ...] = (
    "null", "zero", "full", "random", "urandom", "tty", "shm",
    "nvidia*", "nvidia-caps", "dri", "kfd",
)

#: Oldest Landlock ABI the sandbox accepts (Linux 5.13).
MIN_ABI = 1


class SandboxError(Exception):
    """The sandbox cannot be built or applied here (no Landlock, a bad policy...)."""


# Policy ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SandboxPolicy:
    """What a replica may touch (see the module contract). Paths are absolute strings."""

    hidden: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    private: tuple[str, ...] = ()
    #: ``False``: only create the private directories (``MLE_SANDBOX=off``).
    landlock: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxPolicy:
        try:
            data = json.loads(text)
            return cls(hidden=tuple(data.get("hidden", ())), readable=tuple(data.get("readable", ())),
                       writable=tuple(data.get("writable", ())), private=tuple(data.get("private", ())),
                       landlock=bool(data.get("landlock", True)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise SandboxError(f"bad sandbox policy: {exc}") from None

    def make_private_dirs(self) -> None:
        for path in self.private:
            os.makedirs(path, mode=0o700, exist_ok=True)

    def confinement(self) -> Confinement:
        """The kernel rules for this policy on this machine, ready to :meth:`~Confinement.enter`.
        Raises :class:`SandboxError` when Landlock is missing (and the policy asks for it)."""
        self.make_private_dirs()
        if not self.landlock:
            return Confinement(None, 0, [])
        abi = landlock_abi()
        if abi < MIN_ABI:
            raise SandboxError(f"MLE_SANDBOX=landlock, but {unavailable_reason()} (MLE_SANDBOX=off on the "
                               "server runs trainers unconfined)")
        return Confinement.build(plan_rules(self), abi)


# Expansion (pure: a function of the policy and the filesystem) ----------------------------

def _flags() -> Any:
    import landlockpy

    return landlockpy


def access_sets(abi: int) -> tuple[int, int, int]:
    """``(handled, read, write)`` access masks for Landlock ABI ``abi``."""
    ll = _flags()
    fs = ll.AccessFS
    handled = int(ll.fs_for_abi(abi))
    read = int(fs.READ_FILE | fs.READ_DIR | fs.EXECUTE | fs.RESOLVE_UNIX) & handled
    write = handled & ~int(fs.MAKE_CHAR | fs.MAKE_BLOCK)
    return handled, read, write


def _file_rights() -> int:
    fs = _flags().AccessFS
    return int(fs.EXECUTE | fs.WRITE_FILE | fs.READ_FILE | fs.TRUNCATE | fs.IOCTL_DEV)


@dataclass(frozen=True)
class Rule:
    """Grant ``access`` (``read`` or ``write``, which includes read) beneath ``path``."""

    path: str
    access: str


def _under(path: str, ancestor: str) -> bool:
    """Whether ``path`` is strictly below ``ancestor``."""
    prefix = ancestor if ancestor.endswith("/") else ancestor + "/"
    return path != ancestor and path.startswith(prefix)


def _existing_real(paths: Iterable[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if os.path.lexists(p):
            real = os.path.realpath(p)
            if real not in out:
                out.append(real)
    return out


def plan_rules(policy: SandboxPolicy) -> list[Rule]:
    """The rules that give ``policy``: ``/`` readable with hidden paths carved out, the
    allowed devices, then the readable, writable and private exceptions."""
    hidden = set(_existing_real([*policy.hidden, "/dev"]))
    rules: list[Rule] = []

    def carve(path: str, access: str) -> None:
        inner = [h for h in hidden if _under(h, path)]
        if not inner:
            rules.append(Rule(path, access))
            return
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return  # unreadable for us: grant nothing beneath it
        for name in names:
            child = os.path.join(path, name)
            if child in hidden or os.path.islink(child):
                continue
            carve(child, access)

    carve("/", "read")
    try:
        devices = sorted(os.listdir("/dev"))
    except OSError:
        devices = []
    for name in devices:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in DEVICES):
            path = os.path.realpath(os.path.join("/dev", name))
            if path not in hidden:
                carve(path, "write")
    for path in _existing_real(policy.readable):
        carve(path, "read")
    for path in _existing_real([*policy.writable, *policy.private]):
        carve(path, "write")
    return rules


# Applying -------------------------------------------------------------------------------------

class Confinement:
    """A built Landlock ruleset (or none) that :meth:`enter` applies to the calling process."""

    def __init__(self, ruleset: Any, abi: int, rules: list[Rule]) -> None:
        self.ruleset = ruleset
        self.abi = abi
        self.rules = rules
        self._caps = _Capabilities() if ruleset is not None else None

    @classmethod
    def build(cls, rules: list[Rule], abi: int) -> Confinement:
        ll = _flags()
        handled, read, write = access_sets(abi)
        files = _file_rights()
        scoped = ll.Scope.SIGNAL if abi >= 6 else ll.Scope.NONE
        ruleset = ll.Ruleset(handled_fs=ll.AccessFS(handled), handled_net=ll.AccessNet.NONE, scoped=scoped)
        try:
            for rule in rules:
                access = read if rule.access == "read" else write
                if not os.path.isdir(rule.path):
                    access &= files
                try:
                    ruleset.allow_path(rule.path, ll.AccessFS(access))
                except FileNotFoundError:
                    continue  # vanished since it was listed
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.ENOENT, errno.ENOTDIR, errno.EBADFD):
                        continue  # cannot be named (a dangling entry, a private mount): stays denied
                    raise SandboxError(f"cannot add the sandbox rule for {rule.path}: {exc}") from None
        except BaseException:
            ruleset.close()
            raise
        return cls(ruleset, abi, rules)

    def enter(self) -> None:
        """Confine the calling process (call it in the child, between fork and exec)."""
        if self.ruleset is None or self._caps is None:
            return
        self._caps.drop()
        self.ruleset.restrict()  # sets no_new_privs first

    def close(self) -> None:
        if self.ruleset is not None:
            self.ruleset.close()


class _Capabilities:
    """Empty the capability sets of the calling process (prepared before fork: the child only
    calls into libc)."""

    PR_CAPBSET_DROP = 24
    PR_CAP_AMBIENT = 47
    PR_CAP_AMBIENT_CLEAR_ALL = 4
    VERSION_3 = 0x20080522

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                self.last_cap = int(f.read().strip())
        except (OSError, ValueError):
            self.last_cap = 63
        self.header = self.Header(self.VERSION_3, 0)
        self.data = (self.Data * 2)()

    def drop(self) -> None:
        prctl = self.libc.prctl
        for cap in range(self.last_cap + 1):
            if prctl(self.PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EPERM:
                break  # not ours to drop (no CAP_SETPCAP): no_new_privs still stops gaining any
        prctl(self.PR_CAP_AMBIENT, self.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3
        if self.libc.capset(ctypes.byref(self.header), self.data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"capset: {os.strerror(err)}")


# Availability ---------------------------------------------------------------------------------

def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock (not Linux, too old, disabled)."""
    try:
        return int(_flags().abi_version())
    except Exception:
        return 0


def unavailable_reason() -> str:
    import platform

    if platform.system() != "Linux":
        return f"Landlock is a Linux feature; this is {platform.system()}"
    return (f"this kernel ({platform.release()}) has no Landlock: it needs Linux 5.13 or newer "
            "with 'landlock' in its LSM list (CONFIG_LSM or the lsm= boot parameter)")


# Environment ----------------------------------------------------------------------------------

def env_allowed(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def replica_environment(host: Mapping[str, str], job: Mapping[str, str],
                        allowed: Sequence[str] = INHERITED_ENV) -> dict[str, str]:
    """The environment of a replica: of ``host`` only what ``allowed`` matches, then ``job``."""
    base = {k: v for k, v in host.items() if env_allowed(k, allowed)}
    return {**base, **job}
