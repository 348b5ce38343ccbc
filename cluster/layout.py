"""Where corral puts things on a node: paths relative to the node user's home, which differs per node.

Every remote command starts in the user's home and rsync reads a path without a leading ``/`` as
relative to it, so these relative paths mean the right place on every node without knowing any home.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

REMOTE_ROOT = "corral"


def project_slug(project: Path | str) -> str:
    """A directory name for a local project folder: its name, made safe, plus a short hash of its path.

    The hash keeps two projects both called ``train`` apart; the readable part lets a user find it.
    """
    path = Path(project).expanduser().absolute()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-.") or "project"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"{readable[:40]}-{digest}"


@dataclass(frozen=True)
class RemoteLayout:
    """The remote paths for one project, relative to the node user's home."""

    slug: str

    @classmethod
    def for_project(cls, project: Path | str) -> RemoteLayout:
        return cls(project_slug(project))

    @property
    def code_dir(self) -> str:
        return f"{REMOTE_ROOT}/projects/{self.slug}"

    @property
    def venv_dir(self) -> str:
        return f"{REMOTE_ROOT}/venvs/{self.slug}"

    @property
    def venv_python(self) -> str:
        return f"{self.venv_dir}/bin/python"

    @property
    def env_stamp(self) -> str:
        """What the venv was built from (requirements, Python, platform): unchanged means nothing to do."""
        return f"{self.venv_dir}/corral-env.json"

    @property
    def wheelhouse_dir(self) -> str:
        return f"{REMOTE_ROOT}/wheelhouse"

    @property
    def runs_dir(self) -> str:
        return f"{REMOTE_ROOT}/runs"


# corral's own code on a node, shared by every project: the trainer package with resources/ beside it
# (the trainer finds its bundled corpus at ../resources), and the head node's run supervisor.
LIB_DIR = f"{REMOTE_ROOT}/lib"
BIN_DIR = f"{REMOTE_ROOT}/bin"
