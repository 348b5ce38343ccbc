"""Drive the real ``corral`` command as a user would: a subprocess with its own corral home."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.home import CorralHome


@dataclass
class CorralCli:
    home: Path

    @property
    def paths(self) -> CorralHome:
        return CorralHome(self.home)

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cluster.cli", "--home", str(self.home), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, input=input)
        assert result.returncode == 0, f"corral {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def add_nodes(self, nodes: Sequence[object]) -> None:
        for node in nodes:
            self.ok("node", "add", node.address, "--user", node.user, "--name", node.name)  # type: ignore[attr-defined]

    def install_keys(self, nodes: Sequence[object]) -> subprocess.CompletedProcess[str]:
        passwords = "".join(f"{node.password}\n" for node in nodes)  # type: ignore[attr-defined]
        return self.ok("keys", "--password-stdin", "--accept-new", input=passwords)
