"""Replica supervisor: the small mlengine process that owns one trainer process.

Run as ``python -m mlengine.jobs.executors.supervisor --task-name T --log-file F
--status-file S --cwd D -- ARGV...`` in its own session (process group), detached from the
control plane. It starts ARGV in the same process group, turns its stdout/stderr into
timestamped JSON log lines (stdout → INFO; stderr → the level the line announces, else
ERROR), and when the trainer ends writes its exit status durably to the status file. It
keeps no state anywhere else, so the control plane can die and come back at any time.

With ``--exit-with-parent`` (the Ray executor's agent actor starts it so) it also watches its
parent: if the parent dies (the actor was killed, its placement group removed, the Ray node
stopped), it records the exit status -9 with that reason and kills its process group, so no
trainer outlives the actor that owns it.

With ``--sandbox POLICY`` (a :class:`~mlengine.core.sandbox.SandboxPolicy` as JSON, computed
by the control plane) it creates the replica's private directories and confines the trainer
(and everything the trainer starts) between fork and exec: Landlock rules built on this machine,
no capabilities. The supervisor itself stays unconfined, to write the log and status files.
If the policy cannot be applied here (no Landlock on this node), the trainer never starts: the
replica ends with status 126 and the reason. The executors start the supervisor with
``python -I``, so nothing in the job's ``PYTHONPATH`` or working directory is imported here.

It imports nothing heavy: it starts in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from mlengine.core.files import write_atomic
from mlengine.core.sandbox import Confinement, SandboxError, SandboxPolicy

_LEVEL_RE = re.compile(
    r"^\s*(?:\[?(?P<word>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b\]?|(?P<glog>[IWEF])\d{4} )"
)
_GLOG = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}


def severity_of(line: str, stream: str) -> str:
    if stream == "stdout":
        return "INFO"
    match = _LEVEL_RE.match(line)
    if not match:
        return "ERROR"
    if match.group("glog"):
        return _GLOG[match.group("glog")]
    word = match.group("word")
    return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(word, word)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LogWriter:
    def __init__(self, path: str, task_name: str) -> None:
        self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.task_name = task_name
        self.lock = threading.Lock()

    def write(self, severity: str, message: str) -> None:
        record = {"timestamp": now(), "severity": severity, "taskName": self.task_name, "message": message}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock:
            self.file.write(line)

    def pump(self, stream: IO[bytes], name: str) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            # Progress bars redraw with \r: keep what was last drawn.
            text = text.rsplit("\r", 1)[-1] if "\r" in text else text
            self.write(severity_of(text, name), text)
        stream.close()


def write_status(path: str, status: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(status), durable=True)


def _watch_parent(parent: int, status_file: str, log: LogWriter, started: str) -> None:
    """Kill the replica (this process group) once the process that started us is gone."""
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    message = "the Ray actor that owned the replica died (killed, cancelled, or its node stopped)"
    log.write("ERROR", f"mlengine: {message}; stopping the trainer.")
    write_status(status_file, {"exitCode": -9, "signal": "SIGKILL", "startedAt": started, "endedAt": now(),
                               "message": message})
    os.killpg(os.getpgid(0), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlengine-supervisor")
    parser.add_argument("--task-name", required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--status-file", required=True)
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--exit-with-parent", action="store_true")
    parser.add_argument("--sandbox", default=None, help="SandboxPolicy as JSON")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    log = LogWriter(args.log_file, args.task_name)

    terminating = threading.Event()

    def on_term(signum: int, _frame: Any) -> None:
        # The whole process group gets the signal; the trainer decides how to stop.
        terminating.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = now()
    confinement: Confinement | None = None
    if args.sandbox:
        try:
            confinement = SandboxPolicy.from_json(args.sandbox).confinement()
        except (SandboxError, OSError) as exc:
            message = f"the trainer cannot be confined on this machine: {exc}"
            log.write("ERROR", f"mlengine: {message}")
            write_status(args.status_file, {"exitCode": 126, "startedAt": started, "endedAt": now(),
                                            "message": message})
            return 126
    try:
        child = subprocess.Popen(
            command, cwd=args.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=confinement.enter if confinement is not None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.write("ERROR", f"Could not start {command[0]!r}: {exc}")
        write_status(args.status_file, {"exitCode": 127, "startedAt": started, "endedAt": now(),
                                        "message": f"could not start the trainer: {exc}"})
        return 127
    finally:
        if confinement is not None:
            confinement.close()
    if args.exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(), args.status_file, log, started),
                         daemon=True).start()
    readers = [
        threading.Thread(target=log.pump, args=(child.stdout, "stdout"), daemon=True),
        threading.Thread(target=log.pump, args=(child.stderr, "stderr"), daemon=True),
    ]
    for reader in readers:
        reader.start()
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
            continue
    for reader in readers:
        reader.join(timeout=5)
    status: dict[str, Any] = {"exitCode": code, "pid": child.pid, "startedAt": started, "endedAt": now()}
    if code < 0:
        try:
            status["signal"] = signal.Signals(-code).name
        except ValueError:
            status["signal"] = str(-code)
    if terminating.is_set():
        status["terminated"] = True
    write_status(args.status_file, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
