"""corral keys typed at a terminal, as a person would: confirm the fingerprint, type each password once."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration


class Terminal:
    """A child process on a pseudo-terminal, read until a prompt appears and answered."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become corral, with Ctrl-C working as at any terminal
            # A runner started in the background (`cmd &`) ignores SIGINT, and an ignored signal stays
            # ignored across exec; a person's terminal never starts corral that way.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execv(argv[0], argv)
        self.seen = ""

    def expect(self, text: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"never saw {text!r}; the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    chunk = ""
                if not chunk:
                    raise AssertionError(f"corral exited before {text!r}; it showed:\n{self.seen}")
                self.seen += chunk
        found_at = self.seen.index(text) + len(text)
        shown, self.seen = self.seen[:found_at], self.seen[found_at:]
        return shown

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def wait(self, timeout_s: float = 60) -> tuple[int, str]:
        rest = []
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # never hang the test run: end corral and fail
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"corral did not exit within {timeout_s:g} s; it showed:\n{self.seen}{''.join(rest)}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            rest.append(chunk.decode(errors="replace"))
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status), self.seen + "".join(rest)


def corral_keys_at_a_terminal(cluster_factory, tmp_path, nodes: int) -> tuple:
    """A test cluster, a corral home with its nodes added, and `corral keys` started on a terminal."""
    cluster = cluster_factory(nodes)
    corral = CorralCli(tmp_path / "home")
    corral.add_nodes(cluster.nodes)
    return cluster, corral, keys_terminal(corral)


def keys_terminal(corral: CorralCli) -> Terminal:
    return Terminal([sys.executable, "-m", "cluster.cli", "--home", str(corral.home), "keys"])


def test_a_person_confirms_each_fingerprint_and_types_each_password_once(cluster_factory, tmp_path):
    cluster, corral, terminal = corral_keys_at_a_terminal(cluster_factory, tmp_path, nodes=2)
    answered = set()
    for _ in cluster.nodes:
        shown = terminal.expect("Trust it? [y/N] ")
        node = next(n for n in cluster.nodes if f"({n.user}@{n.address}:22) host key is" in shown)
        assert node.host_key_fingerprint in shown
        terminal.type("y")
        answered.add(node.name)
    assert answered == {node.name for node in cluster.nodes}
    for _ in cluster.nodes:
        shown = terminal.expect("): ")
        node = next(n for n in cluster.nodes if f"Password for {n.user}@{n.address} ({n.name})" in shown)
        terminal.type(node.password)
    code, shown = terminal.wait()
    assert code == 0, shown
    for node in cluster.nodes:
        assert node.password not in shown  # getpass does not echo
        assert f"{node.name}: reaches 1 other node(s) by key" in shown

    # Afterwards no prompt at all: not for the host keys, not for passwords.
    code, shown = keys_terminal(corral).wait()
    assert code == 0, shown
    assert "Trust it?" not in shown and "Password" not in shown


def test_declining_the_fingerprint_changes_nothing(cluster_factory, tmp_path):
    cluster, corral, terminal = corral_keys_at_a_terminal(cluster_factory, tmp_path, nodes=1)
    terminal.expect("Trust it? [y/N] ")
    terminal.type("n")
    code, shown = terminal.wait()
    assert code == 1
    assert f"corral keys {cluster.nodes[0].name} --accept-new" in shown
    assert not corral.paths.known_hosts_path.exists()


def test_ctrl_c_at_a_prompt_ends_corral_at_once(cluster_factory, tmp_path):
    cluster, corral, terminal = corral_keys_at_a_terminal(cluster_factory, tmp_path, nodes=1)
    terminal.expect("Trust it? [y/N] ")
    terminal.type("y")
    terminal.expect("): ")  # the password prompt, echo off
    pressed = time.monotonic()
    os.write(terminal.fd, b"\x03")
    code, shown = terminal.wait()
    assert code == 130, shown
    assert time.monotonic() - pressed < 3
    assert "interrupted" in shown
