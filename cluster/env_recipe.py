"""What a node's venv is built from (requirements, packages, Python, platform) and the stamp that records it.

The stamp is a JSON file at ``RemoteLayout.env_stamp`` on each node, written atomically only after a
successful install and verification; its ``hash`` over the recipe tells ``corral env`` whether anything
changed, so an unchanged node costs one probe and no installer run at all.

Stamp fields (schema 1):
    schema        1
    recipe        RECIPE_VERSION: bumped when corral changes how it builds venvs (forces a rebuild)
    hash          sha256 hex of the recipe: requirements text, packages, Python path+version, platform
                  tags, recipe version
    python        {"path": the base interpreter as found on the node, "version": "3.11.2"}
    platform      {"sys_platform": "linux", "machine": "x86_64", "tags": ["manylinux_2_36_x86_64", ...]}
    packages      the packages corral adds, e.g. ["mlx[cpu]", "mpi4py"]
    requirements  {"file": local path or null, "sha256": hex of the flattened text}
    installer     "uv" or "pip"
    wheels        "push" or "online"
    versions      {"python": "3.11.2", "mlx": "0.32.4", "mpi4py": "4.1.2"} as imported in the venv
    venv_python   RemoteLayout.venv_python (relative to the node user's home)
    installed_at  UTC time, ISO 8601
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import ClusterError

STAMP_SCHEMA = 1
# Bump when the way venvs are built changes, so every node rebuilds once with the new recipe.
RECIPE_VERSION = 1

# Options that need files or network access corral cannot mirror on an offline node.
_REFUSED_OPTIONS = ("-e", "--editable", "-c", "--constraint", "-f", "--find-links", "-i", "--index-url",
                    "--extra-index-url", "--no-index")
_INCLUDE = re.compile(r"^(?:-r|--requirement)(?:\s+|=)(?P<path>.+)$")


@dataclass(frozen=True)
class Requirements:
    """The user's requirements, flattened into one text (``-r`` includes inlined), and where they came from."""

    text: str = ""
    source: Path | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


def read_requirements(path: Path | None) -> Requirements:
    """Read a requirements file, inlining ``-r`` includes; options an offline node cannot honour are refused."""
    if path is None:
        return Requirements()
    lines = _flatten(path.expanduser().absolute(), seen=())
    return Requirements(text="".join(f"{line}\n" for line in lines), source=path.expanduser().absolute())


def _flatten(path: Path, seen: tuple[Path, ...]) -> list[str]:
    if path in seen:
        raise ClusterError(f"{path}: it includes itself through `-r` ({' → '.join(map(str, (*seen, path)))}).")
    try:
        raw = path.read_text()
    except FileNotFoundError:
        where = f" (included from {seen[-1]})" if seen else ""
        raise ClusterError(f"{path}: no such requirements file{where}; check the path given to --requirements.") from None
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read the requirements file ({exc.strerror}).") from exc
    lines: list[str] = []
    for number, line in enumerate(_logical_lines(raw), start=1):
        text = _strip_comment(line).strip()
        if not text:
            continue
        include = _INCLUDE.match(text)
        if include:
            lines += _flatten((path.parent / include.group("path").strip()).resolve(), (*seen, path))
            continue
        option = text.split()[0].split("=")[0]
        if option in _REFUSED_OPTIONS:
            raise ClusterError(
                f"{path}, line {number}: `{option}` is not supported by `corral env` (it needs files or an index "
                "the nodes may not have); list the packages themselves, e.g. `numpy>=1.26`."
            )
        if text.startswith((".", "/", "~")) or text.startswith("file:"):
            raise ClusterError(
                f"{path}, line {number}: {text!r} is a local path; `corral env` installs from the package index "
                "only. Build a wheel and publish it, or install it from the synced code on the node."
            )
        lines.append(text)
    return lines


def _logical_lines(raw: str) -> list[str]:
    # pip joins lines ending in a backslash; so do we, or a split requirement would read as two.
    return raw.replace("\\\n", "").splitlines()


def _strip_comment(line: str) -> str:
    # As pip: a comment starts at '#' at the line start or after whitespace (URLs may contain '#').
    return re.sub(r"(^|\s+)#.*$", "", line)


def recipe_hash(
    requirements: Requirements,
    packages: Sequence[str],
    python_path: str,
    python_version: str,
    platform_tags: Sequence[str],
) -> str:
    """One hash over everything that shapes the venv; equal hashes mean nothing needs installing."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "requirements": requirements.text,
        "packages": list(packages),
        "python": [python_path, python_version],
        "platform": list(platform_tags),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class EnvStamp:
    """A node's stamp as read back; ``versions`` says what the venv imported when it was verified."""

    hash: str
    installer: str
    versions: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> EnvStamp | None:
        """The stamp, or None when it is missing, unreadable or of another schema (the node is rebuilt)."""
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("schema") != STAMP_SCHEMA or not isinstance(data.get("hash"), str):
            return None
        versions = data.get("versions")
        return cls(
            hash=data["hash"],
            installer=str(data.get("installer", "")),
            versions={str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {},
            raw=data,
        )
