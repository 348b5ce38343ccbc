"""Dependencies go one way (gui → cluster → trainer.events), checked by import-linter's contracts."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_cli_start_up_does_not_import_heavy_modules():
    # `corral exec` is measured against pdsh: the CLI module itself must stay cheap to import.
    code = "import sys, cluster.cli; print(sorted(m for m in ('asyncssh', 'yaml', 'zeroconf', 'PySide6') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
