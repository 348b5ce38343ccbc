"""The POSIX sh scripts corral runs on nodes, run here for real with ``sh`` against a scratch HOME."""

import os
import stat
import subprocess
from pathlib import Path

from cluster.keys import append_once_argv
from cluster.mesh import ENSURE_INCLUDE_SCRIPT, INCLUDE_LINE, WRITE_SSH_FILE_SCRIPT

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA corral@a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB corral@b"


def run(argv, home: Path, input: str | None = None) -> None:
    subprocess.run(argv, check=True, env={**os.environ, "HOME": str(home)}, input=input, text=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_append_once_creates_ssh_dir_and_file_private(tmp_path):
    run(append_once_argv("authorized_keys", [KEY_A]), tmp_path)
    keys = tmp_path / ".ssh" / "authorized_keys"
    assert keys.read_text() == KEY_A + "\n"
    assert mode(tmp_path / ".ssh") == 0o700
    assert mode(keys) == 0o600


def test_append_once_is_idempotent_and_matches_by_key_not_comment(tmp_path):
    run(append_once_argv("authorized_keys", [KEY_A, KEY_B]), tmp_path)
    run(append_once_argv("authorized_keys", [KEY_A.replace("corral@a", "renamed"), KEY_B]), tmp_path)
    assert (tmp_path / ".ssh" / "authorized_keys").read_text().splitlines() == [KEY_A, KEY_B]


def test_append_once_never_glues_onto_a_last_line_without_newline(tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir(mode=0o755)
    (ssh / "authorized_keys").write_text("ssh-rsa AAAAB3existing user@laptop")
    (ssh / "authorized_keys").chmod(0o644)
    run(append_once_argv("authorized_keys", [KEY_A]), tmp_path)
    assert (ssh / "authorized_keys").read_text().splitlines() == ["ssh-rsa AAAAB3existing user@laptop", KEY_A]
    assert mode(ssh) == 0o700 and mode(ssh / "authorized_keys") == 0o600


def test_append_once_does_not_run_key_text_as_shell(tmp_path):
    hostile = "ssh-ed25519 AAAA$(touch pwned);`touch pwned2` x"
    run(append_once_argv("authorized_keys", [hostile]), tmp_path)
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == hostile + "\n"
    assert not any(p.name.startswith("pwned") for p in Path.cwd().iterdir())


def test_write_ssh_file_replaces_content_with_mode_600(tmp_path):
    argv = ["sh", "-c", WRITE_SSH_FILE_SCRIPT, "corral-write", "corral_config"]
    run(argv, tmp_path, input="first\n")
    run(argv, tmp_path, input="second\n")
    target = tmp_path / ".ssh" / "corral_config"
    assert target.read_text() == "second\n"
    assert mode(target) == 0o600
    assert [p.name for p in (tmp_path / ".ssh").iterdir()] == ["corral_config"]  # no temp file left


def test_include_goes_first_once_and_keeps_the_users_config(tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text("Host *\n    User someone\n")
    run(["sh", "-c", ENSURE_INCLUDE_SCRIPT], tmp_path)
    run(["sh", "-c", ENSURE_INCLUDE_SCRIPT], tmp_path)
    lines = (ssh / "config").read_text().splitlines()
    assert lines.count(INCLUDE_LINE) == 1
    assert lines.index(INCLUDE_LINE) < lines.index("Host *")
    assert lines[-2:] == ["Host *", "    User someone"]


def test_include_is_written_through_a_symlinked_config(tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    real = tmp_path / "dotfiles-config"
    real.write_text("Host *\n")
    (ssh / "config").symlink_to(real)
    run(["sh", "-c", ENSURE_INCLUDE_SCRIPT], tmp_path)
    assert (ssh / "config").is_symlink()
    assert INCLUDE_LINE in real.read_text().splitlines()
