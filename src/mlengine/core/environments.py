"""The Python environment a training job runs in.

Contract
--------
- A job runs with the server's interpreter (``sys.executable``) and its site-packages, so
  frameworks installed with mlengine (TensorFlow, torch, scikit-learn...) are importable. The
  job's packages and whatever their ``install_requires`` need *beyond what the server already
  has* are installed on top, into ``<root>/<key>/site``; the replica runs with that directory
  prepended to ``PYTHONPATH`` (:meth:`PreparedEnvironment.env_vars`), which puts it before the
  server's site-packages, so ``python -m trainer.task`` imports the job's package and a
  dependency the job pins to another version shadows the server's copy.
- How (measured on 2 cores, see ``tests/training/test_environments.py``): uv does not see
  packages outside the environment it installs into (``--target`` resolves from scratch and
  would install a second numpy; ``.pth`` files and ``--system-site-packages`` are ignored), so
  the install is two uv calls:

  1. ``uv pip install --python <server python> --dry-run <packages>`` resolves against the
     server's installed distributions, which uv prefers and keeps, and prints what it *would*
     install (``+ name==version``). Nothing is written to the server's environment.
  2. ``uv pip install --python <server python> --target <tmp>/site --no-deps <packages>
     <those pins>`` installs exactly the job's packages and the missing or conflicting
     distributions.

  Source distributions without a ``[build-system]`` table (what ``gcloud`` and
  :func:`mlengine.core.packaging.build_sdist` produce) are built without build isolation,
  with the server's setuptools, like pip does for legacy ``setup.py`` projects: no network
  and no download of setuptools. Others are built in isolation, as uv does by default.
- A runtime's ``requirements`` (:mod:`mlengine.core.runtimes`, ``MLE_RUNTIMES``) are resolved
  and installed with the packages, the same way: what the server lacks or has at another version
  lands in the environment and shadows the server's copy.
- The server's CPU builds satisfy requirements of their full names: where the server has
  ``tensorflow-cpu`` (``xgboost-cpu``) and not ``tensorflow`` (``xgboost``), the plan runs with
  ``--excludes tensorflow``, so a trainer declaring ``tensorflow`` does not get a second 1.8 GB
  TensorFlow over the same modules. Afterwards every ``Requires-Dist`` of what was installed (and
  every runtime requirement) naming an excluded distribution is checked against the server's
  version; one the CPU build does not satisfy is built again without that exclusion.
- Cached by content: the key is the SHA-256 of the sorted SHA-256s of the package files, the
  runtime requirements, the interpreter (path and version) and the names of the distributions installed on the server
  (so upgrading the server invalidates stale environments). A cache hit is a hash of the
  package files plus one ``stat``/small read: well under 50 ms for typical packages.
- Safe across threads and processes: builds of one key are serialized by ``fcntl.flock`` on
  ``<root>/<key>.lock``; an environment is built in ``<root>/.build-<key>-*`` and published by
  one atomic :func:`os.rename`, so a crashed half-build is never mistaken for a cached one (its
  leftovers are removed by the next build of that key).
- Failure to resolve or install is ``FAILED_PRECONDITION`` "Failed to install the job's
  packages: <uv's error lines>", never a stack trace.
- ``.pth`` files in the installed packages are not executed (PYTHONPATH directories are not
  site directories); the plain directory entries they list are added to ``pythonpath``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlengine.core.packaging import dist_name, needs_build_isolation, sha256_file
from mlengine.core.sandbox import SandboxPolicy, replica_environment
from mlengine.errors import Code, MLEngineError, not_found

Log = Callable[[str], None]
_LAYOUT_VERSION = "2"
#: Distributions the server's CPU build stands in for: requirement name → CPU build's name.
CPU_BUILDS = {"tensorflow": "tensorflow-cpu", "xgboost": "xgboost-cpu"}
_MANIFEST = "env.json"
_PLAN_LINE = re.compile(
    r"^ [+~] (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?"
    r"(?:==(?P<version>\S+))?(?: @ (?P<url>\S+))?(?: \(from (?P<from>\S+)\))?\s*$"
)
_NOISE = re.compile(r"^(Using (CPython|Python)|Resolved|Prepared|Would |Audited|\s*Building|\s*Built)")


@dataclass(frozen=True)
class PreparedEnvironment:
    """Where and how a replica runs: ``python`` with ``pythonpath`` prepended to PYTHONPATH."""

    key: str
    python: str
    pythonpath: list[str]
    cached: bool
    bin_dirs: list[str] = field(default_factory=list)

    def env_vars(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables to set for a replica: ``PYTHONPATH`` (and ``PATH`` when the packages
        installed scripts), each prepended to the value in ``base`` (default: nothing for
        PYTHONPATH, ``os.environ`` for PATH). Empty for an environment without packages."""
        out: dict[str, str] = {}
        if self.pythonpath:
            rest = (base or {}).get("PYTHONPATH", "")
            out["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *([rest] if rest else [])])
        if self.bin_dirs:
            rest = (base if base is not None else os.environ).get("PATH", "")
            out["PATH"] = os.pathsep.join([*self.bin_dirs, *([rest] if rest else [])])
        return out


def find_uv() -> str:
    """The uv binary: the ``uv`` package's, else the one next to ``sys.executable``, else PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    candidate = Path(sys.executable).parent / "uv"
    found = str(candidate) if candidate.is_file() else shutil.which("uv")
    if not found:
        raise MLEngineError(Code.FAILED_PRECONDITION, "uv is not installed on this server: pip install uv")
    return found


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _without_tracebacks(lines: list[str]) -> list[str]:
    """Drop the frames of Python tracebacks (a build backend's), keeping the exception line."""
    out: list[str] = []
    frame_indent: int | None = None
    for line in lines:
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("Traceback (most recent call last)"):
            continue
        if stripped.startswith('File "'):
            frame_indent = indent
            continue
        if frame_indent is not None and indent > frame_indent:
            continue  # the source line or the carets of a frame
        frame_indent = None
        out.append(line)
    return out


def _trim_error(output: str, max_lines: int = 30, max_chars: int = 4000) -> str:
    lines = _without_tracebacks([ln.rstrip() for ln in output.splitlines() if ln.strip()])
    start = next(
        (i for i, line in enumerate(lines) if line.lstrip().startswith(("error:", "×"))),
        None,
    )
    relevant = lines[start:] if start is not None else [ln for ln in lines if not _NOISE.match(ln)]
    text = "\n".join(relevant[:max_lines]) or "\n".join(lines[-max_lines:])
    return text[:max_chars]


#: Variables a confined package build inherits besides the replicas' (index and proxy settings).
BUILD_ENV = ("UV_*", "PIP_*", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
             "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HOME", "XDG_CACHE_HOME")


@dataclass(frozen=True)
class BuildConfinement:
    """How builds are confined: installing a package runs its own ``setup.py`` (user code), so
    uv runs under a sandbox (:mod:`mlengine.core.confined`) that hides ``hidden`` (the server's
    home, database, credentials) and lets it write only its build directory and uv's cache,
    with an allow-listed environment (``inherit`` plus :data:`BUILD_ENV`)."""

    hidden: tuple[str, ...]
    inherit: tuple[str, ...]

    def wrap(self, cmd: list[str], readable: Sequence[str], writable: Sequence[str]) -> list[str]:
        policy = SandboxPolicy(hidden=self.hidden, readable=tuple(readable),
                               writable=(*writable, uv_cache_dir()))
        return [sys.executable, "-I", "-m", "mlengine.core.confined", policy.to_json(), "--", *cmd]

    def environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        return replica_environment(os.environ, dict(extra), (*self.inherit, *BUILD_ENV))


def uv_cache_dir() -> str:
    """Where uv caches downloads and builds (it must stay writable for confined builds)."""
    if os.environ.get("UV_CACHE_DIR"):
        return os.path.abspath(os.environ["UV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "uv")
    os.makedirs(path, exist_ok=True)
    return path


class EnvironmentCache:
    """Python environments of jobs under ``root``, one directory per content key.

    ``uv`` defaults to :func:`find_uv`; ``uv_args`` are added to every uv call (e.g.
    ``["--index-url", URL]`` or ``["--offline", "--find-links", DIR]`` for air-gapped servers).
    With ``confinement`` every uv call runs confined (see :class:`BuildConfinement`).
    Instances keep no mutable state and may be shared by threads.
    """

    def __init__(
        self,
        root: Path,
        *,
        uv: str | None = None,
        uv_args: Sequence[str] = (),
        timeout_seconds: float = 3600.0,
        confinement: BuildConfinement | None = None,
    ) -> None:
        self.confinement = confinement
        self.root = Path(root)
        self.python = sys.executable
        self._uv = uv
        self.uv_args = list(uv_args)
        self.timeout_seconds = timeout_seconds

    # Keys and lookups --------------------------------------------------------------------
    def key_for(self, packages: Sequence[Path], requirements: Sequence[str] = ()) -> str:
        """The content key of an environment holding ``packages`` (and a runtime's
        ``requirements``) on this server."""
        digest = hashlib.sha256(f"mlengine-env-{_LAYOUT_VERSION}\0".encode())
        digest.update(f"{self.python}\0{sys.version}\0".encode())
        digest.update(server_fingerprint().encode())
        for h in sorted(sha256_file(p) for p in packages):
            digest.update(h.encode())
        for requirement in sorted(set(requirements)):
            digest.update(f"\0req:{requirement}".encode())
        return digest.hexdigest()[:32]

    def path_for(self, key: str) -> Path:
        return self.root / key

    def _load(self, key: str, cached: bool) -> PreparedEnvironment | None:
        env_dir = self.path_for(key)
        try:
            manifest = json.loads((env_dir / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return PreparedEnvironment(
            key=key,
            python=self.python,
            pythonpath=[str(env_dir / p) for p in manifest["pythonpath"]],
            cached=cached,
            bin_dirs=[str(env_dir / p) for p in manifest.get("bin_dirs", [])],
        )

    # Preparing ---------------------------------------------------------------------------
    def prepare(self, packages: list[Path], log: Log | None = None,
                requirements: Sequence[str] = ()) -> PreparedEnvironment:
        """The environment holding ``packages`` (sdists or wheels) and a runtime's
        ``requirements`` (PEP 508 strings), built unless cached.

        No packages and no requirements give the server's environment as is (no extra path,
        ``cached=True``).
        Raises NOT_FOUND for a missing package file and FAILED_PRECONDITION when uv cannot
        resolve or install them.
        """
        say: Log = log or (lambda _line: None)
        requirements = list(dict.fromkeys(requirements))
        if not packages and not requirements:
            return PreparedEnvironment(key="", python=self.python, pythonpath=[], cached=True)
        packages = list(dict.fromkeys(Path(p).absolute() for p in packages))
        for p in packages:
            if not p.is_file():
                raise not_found(f"Package {p}")
        key = self.key_for(packages, requirements)
        env = self._load(key, cached=True)
        if env is not None:
            say(f"Using cached environment {key}")
            return env
        self.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.root / f"{key}.lock"):
            env = self._load(key, cached=True)
            if env is not None:  # another thread or process built it while we waited
                say(f"Using cached environment {key}")
                return env
            self._remove_leftovers(key)
            self._build(key, packages, requirements, say)
        built = self._load(key, cached=False)
        if built is None:  # pragma: no cover - removed behind our back
            raise MLEngineError(Code.INTERNAL, f"Environment {key} vanished after its build.")
        return built

    def _remove_leftovers(self, key: str) -> None:
        for stale in self.root.glob(f".build-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        env_dir = self.path_for(key)
        if env_dir.exists():  # no manifest: not a finished environment
            shutil.rmtree(env_dir, ignore_errors=True)

    def _build(self, key: str, packages: list[Path], requirements: list[str], say: Log) -> None:
        noun = "package" if len(packages) == 1 else "packages"
        what = f"{len(packages)} {noun}" + (f" and runtime requirements {', '.join(requirements)}"
                                            if requirements else "")
        say(f"Installing {what} into a new environment {key}")
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=self.root))
        try:
            site = tmp / "site"
            own, flags = self._requirements(packages)
            stand_ins = cpu_stand_ins()
            excluded = {name for name in stand_ins if not _unsatisfied(name, stand_ins[name], requirements)}
            while True:
                shutil.rmtree(site, ignore_errors=True)
                site.mkdir()
                deps = self._plan([*own, *requirements], packages, flags, tmp, sorted(excluded))
                if deps:
                    say("Dependencies missing from the server: " + ", ".join(deps))
                else:
                    say("All dependencies are provided by the server")
                if own or deps:
                    self._uv_run(["--target", str(site), "--no-deps", *flags, *own, *deps], say, stream=True,
                                 readable=[str(p) for p in packages], writable=[str(tmp)])
                needed = {name: stand_ins[name] for name in excluded}
                wanted = requires_dist(site)
                refused = {name for name in excluded if _unsatisfied(name, needed[name], wanted)}
                for name in sorted(excluded - refused):
                    if any(_names(req, name) for req in wanted):
                        build, version = needed[name]
                        say(f"{name} is provided by the server's {build} {version}")
                if not refused:
                    break
                for name in sorted(refused):
                    build, version = needed[name]
                    say(f"The server's {build} {version} does not satisfy the packages' {name} requirement: "
                        f"installing {name}")
                excluded -= refused
            shutil.rmtree(tmp / "tmp", ignore_errors=True)  # the confined build's TMPDIR
            manifest = {
                "layout": _LAYOUT_VERSION,
                "packages": [p.name for p in packages],
                "requirements": requirements,
                "dependencies": deps,
                "pythonpath": ["site", *_pth_entries(site, tmp)],
                "bin_dirs": ["site/bin"] if (site / "bin").is_dir() else [],
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            tmp.chmod(0o755)
            os.rename(tmp, self.path_for(key))
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _requirements(self, packages: list[Path]) -> tuple[list[str], list[str]]:
        """uv requirements for the job's own packages, and the build-isolation flags."""
        reqs: list[str] = []
        flags: list[str] = []
        for p in packages:
            name = dist_name(p)
            reqs.append(f"{name} @ {p.as_uri()}" if name else str(p))
            if name and not needs_build_isolation(p):
                flags += ["--no-build-isolation-package", name]
        return reqs, flags

    def _plan(self, own: list[str], packages: list[Path], flags: list[str], tmp: Path,
              excluded: Sequence[str] = ()) -> list[str]:
        """What uv would add to the server's environment for ``own``, minus the packages
        themselves, never installing the ``excluded`` distributions."""
        # --break-system-packages: a dry run writes nothing, and a distro Python marked
        # EXTERNALLY-MANAGED would otherwise refuse even to be looked at.
        args = ["--dry-run", "--break-system-packages", *flags]
        if excluded:
            excludes = tmp / "excludes.txt"
            excludes.write_text("".join(f"{name}\n" for name in excluded))
            args += ["--excludes", str(excludes)]
        args += own
        output = self._uv_run(args, None, stream=False, readable=[str(p) for p in packages], writable=[str(tmp)])
        own_uris = {p.as_uri() for p in packages}
        deps: list[str] = []
        for line in output.splitlines():
            match = _PLAN_LINE.match(line)
            if not match:
                continue
            url = match.group("url") or match.group("from")
            if url in own_uris:
                continue
            if url:
                deps.append(f"{match.group('name')} @ {url}")
            elif match.group("version"):
                deps.append(f"{match.group('name')}=={match.group('version')}")
        return deps

    def _uv_run(self, args: list[str], say: Log | None, stream: bool, readable: Sequence[str] = (),
                writable: Sequence[str] = ()) -> str:
        uv = self._uv or find_uv()
        cmd = [uv, "pip", "install", "--python", self.python, "--color", "never"]
        cmd += [*self.uv_args, *args]
        quiet = {"NO_COLOR": "1", "UV_NO_PROGRESS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if self.confinement is not None:
            tmpdir = Path(writable[0]) / "tmp" if writable else None
            if tmpdir is not None:
                tmpdir.mkdir(parents=True, exist_ok=True)
                quiet["TMPDIR"] = str(tmpdir)
            cmd = self.confinement.wrap(cmd, readable, writable)
            env = self.confinement.environment(quiet)
        else:
            env = dict(os.environ, **quiet)
        env.pop("VIRTUAL_ENV", None)
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=env,
                # uv reads [tool.uv] of a pyproject.toml above its working directory: builds must
                # not depend on where the server was started.
                cwd=writable[0] if writable else None,
            )
        except OSError as err:
            raise MLEngineError(Code.FAILED_PRECONDITION, f"Failed to install the job's packages: {err}") from None
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(self.timeout_seconds, kill)
        timer.start()
        lines: list[str] = []
        try:
            for line in proc.stdout or ():
                lines.append(line)
                if stream and say and line.strip() and not _NOISE.match(line):
                    say(line.rstrip())
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = "".join(lines)
        if rc != 0:
            reason = _trim_error(output)
            if timed_out.is_set():
                reason = f"uv did not finish within {self.timeout_seconds:.0f} s. {reason}"
            raise MLEngineError(Code.FAILED_PRECONDITION, f"Failed to install the job's packages: {reason}")
        return output


def cpu_stand_ins() -> dict[str, tuple[str, str]]:
    """Requirement name → (CPU build, its version) for each CPU build installed on the server
    whose full-named distribution is not."""
    from importlib import metadata

    out: dict[str, tuple[str, str]] = {}
    for name, build in CPU_BUILDS.items():
        try:
            metadata.version(name)
            continue  # the full distribution is there: nothing to stand in for
        except metadata.PackageNotFoundError:
            pass
        try:
            out[name] = (build, metadata.version(build))
        except metadata.PackageNotFoundError:
            continue
    return out


def requires_dist(site: Path) -> list[str]:
    """The ``Requires-Dist`` lines of every distribution installed in ``site``."""
    from email.parser import HeaderParser

    out: list[str] = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        headers = HeaderParser().parsestr(meta.read_text(errors="replace"))
        out += headers.get_all("Requires-Dist") or []
    return out


def _names(requirement: str, name: str) -> bool:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return False
    if canonicalize_name(req.name) != canonicalize_name(name):
        return False
    return req.marker is None or req.marker.evaluate({"extra": ""})


def _unsatisfied(name: str, stand_in: tuple[str, str], requirements: Sequence[str]) -> bool:
    """Whether one of ``requirements`` names ``name`` with a version ``stand_in`` lacks."""
    from packaging.requirements import Requirement

    version = stand_in[1]
    return any(not Requirement(r).specifier.contains(version, prereleases=True)
               for r in requirements if _names(r, name))


def server_fingerprint() -> str:
    """Names of the distributions installed in the server's site-packages (cheap: listdir)."""
    paths = sysconfig.get_paths()
    dirs = sorted({*site.getsitepackages(), paths["purelib"], paths["platlib"]})
    names: list[str] = []
    for directory in dirs:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        suffixes = (".dist-info", ".egg-info", ".egg-link", ".pth")
        names += [f"{directory}/{e}" for e in entries if e.endswith(suffixes)]
    return "\n".join(sorted(names))


def _pth_entries(site: Path, env_dir: Path) -> list[str]:
    """Directory entries of ``*.pth`` files in ``site``, relative to ``env_dir``."""
    entries: list[str] = []
    for pth in sorted(site.glob("*.pth")):
        for line in pth.read_text(errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            target = (site / line).resolve()
            if target.is_dir() and target.is_relative_to(env_dir.resolve()):
                entries.append(str(target.relative_to(env_dir.resolve())))
    return entries
