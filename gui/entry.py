"""The ``corral`` command: the desktop window when no command is given, the CLI otherwise (Qt only for the window)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Options that may come before a command and still mean "open the window" when no command follows.
_GLOBAL_WITH_VALUE = ("--home",)
_GLOBAL_FLAGS = ("-v", "--verbose")


def wants_window(argv: Sequence[str]) -> bool:
    """True when argv holds only global options (``--home DIR``, ``-v``): no command, no ``--help``."""
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in _GLOBAL_FLAGS or any(word.startswith(f"{option}=") for option in _GLOBAL_WITH_VALUE):
            index += 1
        elif word in _GLOBAL_WITH_VALUE and index + 1 < len(argv):
            index += 2
        else:
            return False
    return True


def home_argument(argv: Sequence[str]) -> str | None:
    """The value of ``--home`` among the global options, if given."""
    for index, word in enumerate(argv):
        if word == "--home" and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--home="):
            return word.split("=", 1)[1]
    return None


def display_problem(environ: dict[str, str] | os._Environ[str] = os.environ, platform: str = sys.platform) -> str | None:
    """Why no window can open here (Linux with no display and no Qt platform chosen), or None."""
    if not platform.startswith("linux"):
        return None
    if environ.get("QT_QPA_PLATFORM") or environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return ("corral: no display here (neither DISPLAY nor WAYLAND_DISPLAY is set), so the window cannot open; "
            "use the commands below, or run `corral` on a desktop (over SSH: `ssh -X`).")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not wants_window(args):
        from cluster.cli import main as cli_main

        return cli_main(args)
    problem = display_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        from cluster.cli import main as cli_main

        return cli_main(args)
    from gui.app import run_app  # Qt is imported only now

    return run_app(home_argument(args), verbose="-v" in args or "--verbose" in args)


if __name__ == "__main__":
    sys.exit(main())
