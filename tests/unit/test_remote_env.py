"""corral env's pure parts: platform tags, the probe (run locally), recipes and stamps, installer choice, errors."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.cli_env import ProgressView, retry_command
from cluster.env_probe import NodeProbe, mlx_requirement, parse_probe_output, platform_tags, probe_argv
from cluster.env_recipe import EnvStamp, Requirements, read_requirements, recipe_hash
from cluster.errors import ClusterError, NodeError
from cluster.layout import RemoteLayout
from cluster.remote_env import (
    EnvProgress,
    EnvRequest,
    EnvStep,
    InstallPlan,
    choose_installer,
    install_failure,
    plan_node,
    stamp_fields,
)
from cluster.wheels import PreparedWheels, WheelGroup, download_error, pip_download_argv, rsync_push_argv

LAYOUT = RemoteLayout("proj-12345678")


def linux_probe(**changes: object) -> NodeProbe:
    probe = NodeProbe(node="node1", python_path="/usr/bin/python3", python_version="3.11.2", implementation="cpython",
                      sys_platform="linux", machine="x86_64", glibc="2.36", macos=None, has_ensurepip=True,
                      uv_path=None, free_bytes=10 << 30, stamp_text=None, venv_ok=False)
    return replace(probe, **changes)  # type: ignore[arg-type]  # field names checked by replace at run time


# --- platform tags and the MLX variant -------------------------------------------------------------

PLATFORM_CASES = [
    # (sys_platform, machine, glibc, macos, first tags, must contain, must not contain, last tag)
    ("linux", "x86_64", "2.36", None, ["manylinux_2_36_x86_64", "manylinux_2_35_x86_64"],
     ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64"],
     ["manylinux_2_4_x86_64"], "linux_x86_64"),
    ("linux", "aarch64", "2.31", None, ["manylinux_2_31_aarch64"], ["manylinux2014_aarch64", "manylinux_2_17_aarch64"],
     ["manylinux_2_16_aarch64", "manylinux1_aarch64"], "linux_aarch64"),
    ("linux", "x86_64", None, None, [], [], ["manylinux2014_x86_64"], "linux_x86_64"),  # musl: no manylinux
    ("darwin", "arm64", None, "14.5", ["macosx_14_0_arm64", "macosx_14_0_universal2", "macosx_13_0_arm64"],
     ["macosx_11_0_arm64", "macosx_11_0_universal2"], ["macosx_10_16_arm64", "macosx_15_0_arm64"],
     "macosx_11_0_universal2"),
]


@pytest.mark.parametrize("sys_platform, machine, glibc, macos, first, present, absent, last", PLATFORM_CASES)
def test_platform_tags(sys_platform, machine, glibc, macos, first, present, absent, last):
    tags = platform_tags(sys_platform, machine, glibc=glibc, macos=macos)
    assert tags[: len(first)] == first
    assert all(tag in tags for tag in present)
    assert not any(tag in tags for tag in absent)
    assert tags[-1] == last
    assert len(tags) == len(set(tags))


@pytest.mark.parametrize("changes, expected", [
    ({}, "mlx[cpu]"),
    ({"sys_platform": "darwin", "machine": "arm64", "glibc": None, "macos": "14.5"}, "mlx"),
])
def test_mlx_variant(changes, expected):
    assert mlx_requirement(linux_probe(**changes)) == expected


@pytest.mark.parametrize("changes, words", [
    ({"sys_platform": "darwin", "machine": "x86_64", "glibc": None, "macos": "13.6"}, ["node1", "Apple Silicon", "--python"]),
    ({"glibc": None}, ["node1", "musl", "glibc"]),
    ({"sys_platform": "freebsd14"}, ["node1", "freebsd14"]),
])
def test_unsupported_platforms_are_refused_clearly(changes, words):
    with pytest.raises(NodeError) as caught:
        mlx_requirement(linux_probe(**changes))
    assert all(word in str(caught.value) for word in words)
    assert caught.value.node == "node1"


# --- the probe, run for real on this machine --------------------------------------------------------

def run_probe(tmp_path: Path, python: str | None, *, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    # Without SSH: the same argv, run by the local sh in a fake home.
    argv = ["/bin/sh", *probe_argv(LAYOUT, python)[1:]]  # the PATH given may not even hold sh
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": path, "HOME": str(tmp_path)}, timeout=30)


def test_probe_reports_this_machine(tmp_path):
    result = run_probe(tmp_path, sys.executable)
    probe = parse_probe_output("here", result.stdout, result.stderr, sys.executable)
    assert probe.python_path == sys.executable
    assert probe.python_version == "%d.%d.%d" % sys.version_info[:3]
    assert probe.sys_platform == sys.platform
    assert probe.stamp_text is None and not probe.venv_ok
    assert probe.free_bytes and probe.free_bytes > 0


def test_probe_reads_the_stamp_and_checks_the_venv(tmp_path):
    venv = tmp_path / LAYOUT.venv_dir
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / LAYOUT.env_stamp).write_text('{"schema": 1}')
    probe = parse_probe_output("here", run_probe(tmp_path, sys.executable).stdout, "", sys.executable)
    assert probe.stamp_text == '{"schema": 1}' and probe.venv_ok
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "gone-python")  # its base Python was removed
    probe = parse_probe_output("here", run_probe(tmp_path, sys.executable).stdout, "", sys.executable)
    assert probe.stamp_text and not probe.venv_ok


def test_probe_finds_a_pushed_uv(tmp_path):
    uv = tmp_path / LAYOUT.wheelhouse_dir / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    probe = parse_probe_output("here", run_probe(tmp_path, sys.executable).stdout, "", sys.executable)
    assert probe.uv_path == f"{LAYOUT.wheelhouse_dir}/bin/uv"


def test_probe_refuses_an_old_python_naming_its_version(tmp_path):
    fake = tmp_path / "python3.8"
    fake.write_text("#!/bin/sh\necho 'Python 3.8.10'\n")
    fake.chmod(0o755)
    result = run_probe(tmp_path, str(fake))
    with pytest.raises(NodeError) as caught:
        parse_probe_output("node2", result.stdout, result.stderr, str(fake))
    assert str(caught.value).startswith(f"node2: {fake} is Python 3.8.10, but corral needs 3.10 or newer;")


def test_probe_without_any_python_lists_what_it_tried(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_probe(tmp_path, None, path=str(empty))
    with pytest.raises(NodeError) as caught:
        parse_probe_output("node3", result.stdout, result.stderr, None)
    assert "node3: no `python3` (3.10 or newer) was found" in str(caught.value)
    assert "--python" in str(caught.value)


def test_probe_with_a_missing_explicit_python(tmp_path):
    result = run_probe(tmp_path, "/nowhere/python3")
    with pytest.raises(NodeError, match=r"node1: no Python at '/nowhere/python3' \(--python\)"):
        parse_probe_output("node1", result.stdout, result.stderr, "/nowhere/python3")


def test_probe_garbage_is_an_error_naming_the_node():
    with pytest.raises(NodeError, match=r"^node4: the environment probe failed \(sh: 1: bad\)"):
        parse_probe_output("node4", "", "sh: 1: bad\n", None)


# --- requirements, recipe hash, stamp ---------------------------------------------------------------

def test_requirements_are_flattened_with_includes_comments_and_continuations(tmp_path):
    (tmp_path / "base.txt").write_text("numpy>=1.26  # arrays\n")
    (tmp_path / "requirements.txt").write_text("# top\n-r base.txt\n\nsix==1.16.0 \\\n  ; python_version >= '3'\n")
    requirements = read_requirements(tmp_path / "requirements.txt")
    assert requirements.lines == ["numpy>=1.26", "six==1.16.0   ; python_version >= '3'"]
    assert requirements.source == tmp_path / "requirements.txt"


@pytest.mark.parametrize("text, words", [
    ("-e .\n", ["line 1", "`-e`", "not supported"]),
    ("six\n--index-url https://example.invalid/simple\n", ["line 2", "--index-url"]),
    ("./wheels/thing.whl\n", ["line 1", "local path"]),
    ("-r requirements.txt\n", ["includes itself"]),
    ("-r missing.txt\n", ["missing.txt: no such requirements file (included from"]),
])
def test_requirements_that_cannot_be_mirrored_are_refused(tmp_path, text, words):
    (tmp_path / "requirements.txt").write_text(text)
    with pytest.raises(ClusterError) as caught:
        read_requirements(tmp_path / "requirements.txt")
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_missing_requirements_file_names_the_option(tmp_path):
    with pytest.raises(ClusterError, match="no such requirements file; check the path given to --requirements"):
        read_requirements(tmp_path / "nope.txt")


def test_recipe_hash_changes_with_every_input():
    base = (Requirements("six\n"), ["mlx[cpu]", "mpi4py"], "/usr/bin/python3", "3.11.2", ["manylinux_2_36_x86_64"])
    variants = [
        (Requirements("six==1.16.0\n"), *base[1:]),
        (base[0], ["mlx", "mpi4py"], *base[2:]),
        (*base[:2], "/usr/local/bin/python3", *base[3:]),
        (*base[:3], "3.11.9", base[4]),
        (*base[:4], ["manylinux_2_35_x86_64"]),
    ]
    digest = recipe_hash(*base)
    assert recipe_hash(*base) == digest
    assert len({recipe_hash(*variant) for variant in variants} | {digest}) == len(variants) + 1


@pytest.mark.parametrize("text", [None, "", "{", "[]", '{"schema": 2, "hash": "x"}', '{"schema": 1}'])
def test_invalid_stamps_read_as_none(text):
    assert EnvStamp.parse(text) is None


def test_plan_is_unchanged_only_with_the_same_hash_and_a_working_venv():
    requirements = Requirements("six\n")
    fresh = plan_node(linux_probe(), requirements)
    versions = {"mlx": "0.32.4", "mpi4py": "4.1.2"}
    stamp = json.dumps({"schema": 1, "hash": fresh.hash, "installer": "uv", "versions": {"python": "3.11.2", **versions}})
    ok = {"stamp_text": stamp, "venv_ok": True, "installed_versions": versions}
    assert plan_node(linux_probe(**ok), requirements).unchanged
    assert not plan_node(linux_probe(**{**ok, "venv_ok": False}), requirements).unchanged
    assert not plan_node(linux_probe(**ok), Requirements("six\nidna\n")).unchanged
    assert not plan_node(linux_probe(**ok, python_version="3.11.9"), requirements).unchanged
    # Someone pip-installed another mlx into the venv by hand: the stamp no longer tells the truth.
    replaced = {**ok, "installed_versions": {**versions, "mlx": "0.31.2"}}
    assert not plan_node(linux_probe(**replaced), requirements).unchanged
    assert plan_node(linux_probe(**ok), requirements).stamp.versions["mlx"] == "0.32.4"


def test_other_python_implementations_are_refused():
    with pytest.raises(NodeError, match="node1: /usr/bin/python3 is pypy, but MLX needs CPython"):
        plan_node(linux_probe(implementation="pypy"), Requirements())


# --- installer choice -------------------------------------------------------------------------------

def prepared(uv_included: bool) -> PreparedWheels:
    return PreparedWheels(WheelGroup("3.11", "cp311", ("manylinux_2_36_x86_64",)), Path("/cache/g"), uv_included, True)


def stamp_for(installer: str, python: dict[str, str] | None = None) -> str:
    return json.dumps({"schema": 1, "hash": "old", "installer": installer,
                       "python": python or {"path": "/usr/bin/python3", "version": "3.11.2"}})


INSTALLER_CASES = [
    # (probe changes, wheels, forced installer, prepared uv, stamp installer, expected plan)
    ({}, "push", "auto", True, None,
     InstallPlan("uv", "corral/wheelhouse/bin/uv", "corral/wheelhouse/wheels", recreate=True)),
    ({}, "push", "auto", False, None, InstallPlan("pip", None, "corral/wheelhouse/wheels", recreate=True)),
    ({"uv_path": "/home/u/.local/bin/uv"}, "online", "auto", None, None,
     InstallPlan("uv", "/home/u/.local/bin/uv", None, recreate=True)),
    ({}, "online", "auto", None, None, InstallPlan("pip", None, None, recreate=True)),
    ({}, "push", "pip", True, None, InstallPlan("pip", None, "corral/wheelhouse/wheels", recreate=True)),
    # New requirements on a working venv of the same Python: installed in place.
    ({"venv_ok": True}, "push", "auto", True, "uv",
     InstallPlan("uv", "corral/wheelhouse/bin/uv", "corral/wheelhouse/wheels", recreate=False)),
    ({"venv_ok": True, "has_ensurepip": False}, "online", "auto", None, "pip", InstallPlan("pip", None, None, recreate=False)),
]


@pytest.mark.parametrize("changes, wheels, forced, uv_included, stamp_installer, expected", INSTALLER_CASES)
def test_installer_choice(changes, wheels, forced, uv_included, stamp_installer, expected):
    probe = linux_probe(**changes)
    if stamp_installer:
        probe = replace(probe, stamp_text=stamp_for(stamp_installer))
    plan = plan_node(probe, Requirements())
    request = EnvRequest(layout=LAYOUT, wheels=wheels, installer=forced)
    assert choose_installer(plan, request, prepared(uv_included) if uv_included is not None else None) == expected


def test_a_new_base_python_gets_a_fresh_venv():
    probe = linux_probe(venv_ok=True, stamp_text=stamp_for("uv", {"path": "/usr/bin/python3", "version": "3.11.1"}))
    install = choose_installer(plan_node(probe, Requirements()), EnvRequest(layout=LAYOUT, wheels="push"), prepared(True))
    assert install.recreate


def test_pip_without_ensurepip_says_to_install_python3_venv():
    plan = plan_node(linux_probe(has_ensurepip=False), Requirements())
    with pytest.raises(NodeError) as caught:
        choose_installer(plan, EnvRequest(layout=LAYOUT, wheels="online"), None)
    assert "node1:" in str(caught.value) and "sudo apt install python3-venv" in str(caught.value)
    assert "--wheels push" in str(caught.value)


def test_stamp_fields_are_what_the_doctor_reads():
    plan = plan_node(linux_probe(), read_requirements(None))
    install = InstallPlan("uv", "u", "w", recreate=True)
    fields = stamp_fields(plan, EnvRequest(layout=LAYOUT, wheels="push"), install)
    assert set(fields) == {"schema", "recipe", "hash", "python", "platform", "packages", "requirements", "installer",
                           "wheels", "venv_python", "installed_at"}
    assert fields["hash"] == plan.hash and fields["venv_python"] == LAYOUT.venv_python
    stamp = EnvStamp.parse(json.dumps({**fields, "versions": {"mlx": "0.32.4"}}))
    assert stamp is not None and stamp.hash == plan.hash and stamp.installer == "uv"


# --- failures as sentences --------------------------------------------------------------------------

PIP_OFFLINE = """WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection \
broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new \
connection: [Errno 101] Network is unreachable')': /simple/mlx/
ERROR: Could not find a version that satisfies the requirement mlx[cpu] (from versions: none)
ERROR: No matching distribution found for mlx[cpu]
"""
UV_MISSING = """error: No solution found when resolving dependencies
  cause: Because nonexistent-pkg-xyz was not found in the provided package locations and you require \
nonexistent-pkg-xyz, we can conclude that your requirements are unsatisfiable.
"""

FAILURE_CASES = [
    (EnvStep.INSTALLING, PIP_OFFLINE, None, "node1 could not reach the package index; use `--wheels push`"),
    (EnvStep.INSTALLING, UV_MISSING, "w", "node1: no installable 'nonexistent-pkg-xyz' was found"),
    (EnvStep.INSTALLING, "ERROR: No matching distribution found for torchh\n", None,
     "node1: no installable 'torchh' was found (check its name and version); if the node has no internet"),
    (EnvStep.CREATING_VENV, "Error: ensurepip is not available\n", None, "`ensurepip` is missing"),
    (EnvStep.INSTALLING, "OSError: [Errno 28] No space left on device\n", "w", "node1 ran out of disk space"),
    (EnvStep.INSTALLING, "a\nb\nc\nd\n", "w", "node1: installing failed (b / c / d); then retry with `corral env --to node1`."),
]


@pytest.mark.parametrize("step, stderr, wheels_dir, expected", FAILURE_CASES)
def test_install_failures_read_as_sentences(step, stderr, wheels_dir, expected):
    install = InstallPlan("pip", None, wheels_dir, recreate=True)
    error = install_failure("node1", step, stderr, EnvRequest(layout=LAYOUT), install)
    assert expected in str(error) and error.node == "node1"


def test_download_error_names_the_package_and_group(tmp_path):
    group = WheelGroup("3.11", "cp311", ("manylinux_2_36_x86_64",))
    error = download_error("ERROR: No matching distribution found for nope==1.0\n", group,
                           Requirements("nope==1.0\n", tmp_path / "requirements.txt"))
    assert str(error).startswith("the package index has no wheel of 'nope==1.0' for Python 3.11 on manylinux_2_36_x86_64")
    assert str(tmp_path / "requirements.txt") in str(error)


# --- argv builders ----------------------------------------------------------------------------------

def test_pip_download_argv_targets_the_nodes_python_and_platform(tmp_path):
    group = WheelGroup("3.12", "cp312", ("manylinux_2_36_x86_64", "linux_x86_64"))
    argv = pip_download_argv(group, tmp_path / "w", ["mlx[cpu]", "mpi4py"], tmp_path / "r.txt", python="py")
    assert argv[:4] == ["py", "-m", "pip", "download"]
    assert "--only-binary=:all:" in argv
    pairs = list(zip(argv, argv[1:]))
    for pair in [("--python-version", "3.12"), ("--abi", "cp312"), ("--implementation", "cp"),
                 ("--platform", "manylinux_2_36_x86_64"), ("--platform", "linux_x86_64"),
                 ("--dest", str(tmp_path / "w")), ("--requirement", str(tmp_path / "r.txt"))]:
        assert pair in pairs
    assert argv.index("mlx[cpu]") > argv.index("--abi")


def test_wheel_groups_differ_by_platform_and_python():
    a = WheelGroup("3.11", "cp311", ("manylinux_2_36_x86_64", "linux_x86_64"))
    assert a.key.startswith("cp311-manylinux_2_36_x86_64-")
    assert len({a.key, replace(a, abi="cp312").key, replace(a, platform_tags=("manylinux_2_35_x86_64",)).key}) == 3


def test_rsync_push_argv_uses_corrals_ssh_config_and_keeps_metadata_home():
    argv = rsync_push_argv(Path("/h/my home/ssh_config"), "node2", Path("/cache/g"), "corral/wheelhouse")
    assert argv[0] == "rsync" and "--delete" in argv
    assert argv[argv.index("-e") + 1] == "ssh -F '/h/my home/ssh_config'"
    assert "--rsync-path=mkdir -p corral/wheelhouse && rsync" in argv
    assert "--exclude=/.meta/" in argv and "--exclude=/tools/" in argv
    assert argv[-2:] == ["/cache/g/", "node2:corral/wheelhouse/"]


# --- the CLI front end ------------------------------------------------------------------------------

def test_retry_command_keeps_the_options():
    args = argparse.Namespace(home="/h", requirements="req.txt", python="/opt/py", wheels="push", to=None)
    command = retry_command(args, ["node2", "node3"])
    assert command.startswith("corral --home /h env --requirements /")
    assert command.endswith("req.txt --python /opt/py --wheels push --to node2 --to node3")
    plain = argparse.Namespace(home=None, requirements=None, python=None, wheels="online", to=None)
    assert retry_command(plain, ["node1"]) == "corral env --to node1"


def test_progress_without_a_terminal_prints_a_line_per_step():
    out = io.StringIO()
    view = ProgressView(["node1", "node10"], out)
    view.update(EnvProgress("node1", EnvStep.DOWNLOADING, "Python 3.11 on manylinux_2_36_x86_64"))
    view.update(EnvProgress("node10", EnvStep.FAILED, "node10: long sentence"))
    view.close()
    assert out.getvalue() == ("node1   downloading wheels (Python 3.11 on manylinux_2_36_x86_64)\n"
                              "node10  failed\n")


def test_progress_on_a_terminal_redraws_one_line_per_node():
    out = io.StringIO()
    view = ProgressView(["a", "b"], out, live=True)
    view.update(EnvProgress("a", EnvStep.PROBING))
    view.update(EnvProgress("b", EnvStep.UNCHANGED))
    assert out.getvalue().count("\x1b[2F") == 1  # the second update moved back over both lines
    assert out.getvalue().endswith("\x1b[2Ka  probing\n\x1b[2Kb  unchanged\n")


def test_packages_replaced_by_hand_get_a_fresh_venv():
    versions = {"mlx": "0.32.4", "mpi4py": "4.1.2"}
    stamp = json.dumps({"schema": 1, "hash": "old", "installer": "uv", "versions": versions,
                        "python": {"path": "/usr/bin/python3", "version": "3.11.2"}})
    request = EnvRequest(layout=LAYOUT, wheels="push")
    kept = linux_probe(stamp_text=stamp, venv_ok=True, installed_versions=versions)
    assert choose_installer(plan_node(kept, Requirements()), request, prepared(True)).recreate is False
    drifted = replace(kept, installed_versions={**versions, "mlx": "0.31.2"})
    assert choose_installer(plan_node(drifted, Requirements()), request, prepared(True)).recreate is True
