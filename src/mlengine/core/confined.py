"""Run a command confined: ``python -I -m mlengine.core.confined POLICY_JSON -- ARGV...``.

The process applies the :class:`~mlengine.core.sandbox.SandboxPolicy` to itself (Landlock, no
capabilities) and then ``exec``s the command, so the command and everything it starts are
confined. Used for work the control plane starts that runs user code: package builds (a
package's own ``setup.py``) and the module probe. Exit status 126 with the reason on stderr
when the policy cannot be applied (nothing runs unconfined by accident).
"""

from __future__ import annotations

import os
import sys

from mlengine.core.sandbox import SandboxError, SandboxPolicy


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -I -m mlengine.core.confined POLICY_JSON -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        SandboxPolicy.from_json(argv[0]).confinement().enter()
    except (SandboxError, OSError) as exc:
        print(f"mlengine: cannot confine {argv[2]}: {exc}", file=sys.stderr)
        return 126
    os.execvp(argv[2], argv[2:])
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
