"""Where corral keeps its state: the inventory, its key pair, known host keys, generated files, logs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "CORRAL_HOME"


@dataclass(frozen=True)
class CorralHome:
    """The paths inside one corral home directory; nothing is created until a command needs it."""

    root: Path

    @property
    def inventory_path(self) -> Path:
        return self.root / "cluster.yaml"

    @property
    def private_key_path(self) -> Path:
        return self.root / "keys" / "id_ed25519"

    @property
    def public_key_path(self) -> Path:
        return self.root / "keys" / "id_ed25519.pub"

    @property
    def known_hosts_path(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        return self.root / "ssh_config"

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "corral.log"

    def ensure(self) -> None:
        """Create the home, private to this user (it holds a private key and host keys).

        An existing directory is left as it is: ``--home`` may name a directory the user shares, and
        the private files get their own modes when they are written.
        """
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)


def resolve_home(cli_value: str | os.PathLike[str] | None = None) -> CorralHome:
    """``--home`` wins, then ``$CORRAL_HOME``, then the platform's per-user config directory."""
    if cli_value:
        return CorralHome(Path(cli_value).expanduser().absolute())
    env_value = os.environ.get(HOME_ENV)
    if env_value:
        return CorralHome(Path(env_value).expanduser().absolute())
    # Imported here so commands that were given a home skip the import.
    from platformdirs import user_config_dir

    return CorralHome(Path(user_config_dir("corral", appauthor=False)))
