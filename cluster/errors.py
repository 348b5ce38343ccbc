"""The exceptions corral raises; each message is a sentence naming the node or file and the next step.

    ClusterError                 anything corral can explain to the user
    ├── ConfigError              a file (inventory, hostfile, hosts JSON) has problems; lists them all
    ├── NodeError                something about one node; carries ``node``
    │   ├── NodeUnreachable      no TCP connection, or it dropped (refused, no route, timed out)
    │   ├── AuthFailed           the node refused the password or key
    │   ├── HostKeyUnknown       the node's host key has never been accepted
    │   ├── HostKeyChanged       the node's host key differs from the accepted one
    │   └── RemoteCommandFailed  a command on the node exited non-zero
    └── LaunchFailed             a training run could not start
"""

from __future__ import annotations

from collections.abc import Sequence


class ClusterError(Exception):
    """An error the user can act on; ``str()`` is the sentence to show."""


class ConfigError(ClusterError):
    """One or more problems in a file, all reported together."""

    def __init__(self, path: object, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = f"{self.path}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{self.path} has {len(self.problems)} problems:\n{listed}"
        super().__init__(text)


class NodeError(ClusterError):
    """A problem with one node; ``node`` names it so the UI can show the error beside it."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(message)


class NodeUnreachable(NodeError):
    """The node could not be reached over the network, or the connection dropped."""


class AuthFailed(NodeError):
    """The node rejected the credentials (password or key)."""


class HostKeyUnknown(NodeError):
    """The node presented a host key that was never accepted."""

    def __init__(self, node: str, message: str, *, fingerprint: str, key_line: str) -> None:
        self.fingerprint = fingerprint
        self.key_line = key_line
        super().__init__(node, message)


class HostKeyChanged(NodeError):
    """The node presented a host key different from the accepted one: refused, nothing modified."""

    def __init__(self, node: str, message: str, *, known_fingerprint: str, presented_fingerprint: str) -> None:
        self.known_fingerprint = known_fingerprint
        self.presented_fingerprint = presented_fingerprint
        super().__init__(node, message)


class RemoteCommandFailed(NodeError):
    """A command ran on the node and exited non-zero."""

    def __init__(self, node: str, argv: Sequence[str], exit_status: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-3:]
        detail = f": {' / '.join(tail)}" if tail else ""
        status = "was killed" if exit_status is None else f"exited with status {exit_status}"
        super().__init__(node, f"{node}: `{argv[0] if argv else ''}` {status}{detail}")


class LaunchFailed(ClusterError):
    """A training run could not be started."""
