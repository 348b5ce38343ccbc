"""Python packages that code running inside the test nodes can import, installed once per machine.

Nodes have no network and a private /tmp, so a checkout or venv under /tmp is invisible to them;
/var/tmp is shared. Packages go there with ``pip install --target``, built for the nodes' Python
(Debian's /usr/bin/python3, the same minor version as the test runner's here).
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

NODE_PYTHON = "/usr/bin/python3"
ROOT = Path("/var/tmp")


def shared_site(name: str, *requirements: str) -> Path:
    """``/var/tmp/corral-test-NAME`` holding ``requirements``; installs them the first time only."""
    target = ROOT / f"corral-test-{name}"
    marker = target / ".installed"
    with open(ROOT / f".corral-test-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once must not install into one directory
        if not marker.exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade",
                 "--target", str(target), *requirements],
                check=True,
                timeout=600,
            )
            target.chmod(0o755)
            marker.write_text(" ".join(requirements) + "\n")
    return target
