"""LocalHost: this computer as the one node of the embedded cluster, with NodeSession's ``run`` and no SSH.

Commands start in a base directory inside corral's home, which plays the node user's home: the
relative paths of ``cluster.layout`` (``corral/runs/<id>``) then mean the same thing here as on a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from cluster.errors import NodeUnreachable, RemoteCommandFailed
from cluster.home import CorralHome
from cluster.inventory import Node, local_user
from cluster.runs import LOCAL_NODE
from cluster.ssh import CommandResult, OnLine

LOCAL_RANKS = 2


def local_base_dir(home: CorralHome) -> Path:
    return home.root / "local"


def local_node(slots: int = LOCAL_RANKS) -> Node:
    return Node(name=LOCAL_NODE, address="127.0.0.1", user=local_user(), slots=slots)


class LocalHost:
    """Runs argv as a child process of this computer, in the base directory; same contract as NodeSession.run."""

    def __init__(self, base_dir: Path, node: Node | None = None, env: Mapping[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.node = node or local_node()
        self._env = {**os.environ, **(env or {})}

    @property
    def is_open(self) -> bool:
        return True

    async def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout_s: float | None = None,
        on_line: OnLine | None = None,
    ) -> CommandResult:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.base_dir,
            env=self._env,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout or cancel stops the command and what it started
            limit=1 << 24,  # a rank may print long lines (tracebacks, big JSON); readline must not choke
        )
        try:
            stdout, stderr = await asyncio.wait_for(self._communicate(process, input, on_line), timeout_s)
        except asyncio.TimeoutError as exc:
            _terminate(process)
            raise NodeUnreachable(
                self.node.name, f"this computer: `{argv[0]}` did not finish within {timeout_s:g} s and was stopped."
            ) from exc
        except asyncio.CancelledError:
            _terminate(process)
            raise
        result = CommandResult(self.node.name, tuple(argv), process.returncode, stdout, stderr)
        if check and not result.ok:
            raise RemoteCommandFailed(self.node.name, argv, result.exit_status, stderr)
        return result

    @staticmethod
    async def _communicate(process: asyncio.subprocess.Process, input: str | None,
                           on_line: OnLine | None) -> tuple[str, str]:
        if input is not None:
            assert process.stdin is not None
            process.stdin.write(input.encode())
            await process.stdin.drain()
            process.stdin.close()

        async def collect(reader: asyncio.StreamReader | None, name: str) -> str:
            assert reader is not None
            chunks: list[str] = []
            while line := await reader.readline():
                text = line.decode(errors="replace")
                chunks.append(text)
                if on_line is not None:
                    on_line(name, text.rstrip("\r\n"))
            return "".join(chunks)

        stdout, stderr = await asyncio.gather(collect(process.stdout, "stdout"), collect(process.stderr, "stderr"))
        await process.wait()
        return stdout, stderr

    async def close(self) -> None:
        return None


def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
