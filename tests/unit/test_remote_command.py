"""Arguments reach the remote command unchanged through every login shell a node may have."""

import shutil
import subprocess

import pytest

from cluster.ssh import remote_command

TRICKY = ["a b", "it's", 'say "hi"', "x; touch pwned", "$(touch pwned)", "`touch pwned`", "*", "=ls", "%1",
          "~", "~root", "a\nb", "", "\\", "!!", "{a,b}", "#not a comment", "-n", "ü ✓"]


@pytest.mark.parametrize("shell", ["sh", "bash", "zsh", "dash"])
def test_arguments_arrive_unchanged(shell, tmp_path):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    # sshd runs the command as `SHELL -c COMMAND`: do exactly that.
    command = remote_command(["printf", "%s\\0", *TRICKY])
    result = subprocess.run([shell, "-c", command], capture_output=True, cwd=tmp_path, check=True)
    assert result.stdout.decode().split("\0")[:-1] == TRICKY
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_an_empty_command_is_refused():
    with pytest.raises(ValueError):
        remote_command([])
