"""Per-node verdicts from the probe's facts, and the comparisons across nodes (versions must agree)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from cluster.doctor.model import CheckResult, failed, passed, skipped, warned
from cluster.doctor.node_probe import NodeFacts, address_in, parse_mpirun_version
from cluster.layout import RemoteLayout
from trainer.blas import INSTALL_HINT

GB = 1024**3
MB = 1024**2
# Below the warning level a check says so but passes: a small experiment still runs. Below the failure
# level nothing useful can run (a venv, a checkpoint or an MLX process would not fit).
DISK_WARN_BYTES = 5 * GB
DISK_FAIL_BYTES = 1 * GB
MEMORY_WARN_BYTES = 2 * GB
MEMORY_FAIL_BYTES = 256 * MB


def join_names(names: Sequence[str]) -> str:
    """``node1``, ``node1 and node3``, ``node1, node3 and node4``."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def human_bytes(value: int) -> str:
    if value >= GB:
        return f"{value / GB:.1f} GB"
    return f"{value / MB:.0f} MB"


def code_result(node: str, facts: NodeFacts, layout: RemoteLayout) -> CheckResult:
    where = f"~/{layout.code_dir}"
    if facts.code == "nonempty":
        return passed(node, "code", where)
    if facts.code == "empty":
        return failed(node, "code", f"{node}: {where} is empty; run `corral sync --to {node}` to copy the project.",
                      f"{where} empty")
    return failed(node, "code", f"{node}: no project code at {where}; run `corral sync --to {node}` to copy it.",
                  f"{where} missing")


def venv_result(node: str, facts: NodeFacts, layout: RemoteLayout) -> CheckResult:
    where = f"~/{layout.venv_dir}"
    rebuild = f"run `corral env --to {node}` to rebuild it"
    venv = facts.venv
    if venv is None or venv.missing:
        return failed(node, "venv", f"{node}: there is no venv at {where}; run `corral env --to {node}` to create it.",
                      f"{where} missing")
    if venv.python is None:
        tail = " / ".join(venv.raw.strip().splitlines()[-2:]) or "no output"
        return failed(node, "venv", f"{node}: the venv's Python at {where} does not run ({tail}); {rebuild}.",
                      "python does not start")
    if venv.mlx_error or venv.mpi4py_error:
        broken = [f"{module} ({error})" for module, error in (("mlx.core", venv.mlx_error), ("mpi4py", venv.mpi4py_error))
                  if error]
        return failed(node, "venv", f"{node}: {' and '.join(broken)} cannot be imported in the venv at {where}; {rebuild}.",
                      "import failed")
    detail = f"Python {venv.python}, mlx {venv.mlx}, mpi4py {venv.mpi4py}"
    if venv.mlx_mpi is False:
        # The fabric check proves it (MLX as rank 0 of 1); this says it early, even when the fabric is skipped.
        return warned(node, "venv", f"{node}: MLX cannot load libmpi.so (it needs the unversioned name), so it would "
                      f"train alone as rank 0 of 1; {libmpi_fix(node)}", detail + ", MLX cannot load libmpi")
    if (venv.platform or "").startswith("linux") and venv.blas is None:
        return warned(node, "venv", f"{node} has no OpenBLAS, so MLX's matmuls there use the reference BLAS of the "
                      f"mlx-cpu wheel, about 15x slower; install it on the node ({INSTALL_HINT}) and the trainer "
                      "uses it on its next start.", detail + ", no OpenBLAS")
    if venv.blas:
        detail += ", OpenBLAS"
    return passed(node, "venv", detail)


def libmpi_fix(node: str) -> str:
    return (f"install the Open MPI development library on {node} (`sudo apt install libopenmpi-dev`; on a Mac "
            "`brew install open-mpi`) or set MLX_MPI_LIBNAME to the MPI library's file name (e.g. libmpi.so.40).")


def resources_result(node: str, facts: NodeFacts) -> CheckResult:
    disk, memory = facts.disk_free_bytes, facts.memory_available_bytes
    parts = []
    if disk is not None:
        parts.append(f"{human_bytes(disk)} disk free")
    if memory is not None:
        parts.append(f"{human_bytes(memory)} memory available")
    detail = ", ".join(parts) or "unknown"
    if disk is None or memory is None:
        missing = "free disk" if disk is None else "free memory"
        return warned(node, "resources", f"{node}: could not read its {missing} (`df -Pk ~` or /proc/meminfo / vm_stat); "
                      "check it by hand.", detail)
    problems_fail, problems_warn = [], []
    if disk < DISK_FAIL_BYTES:
        problems_fail.append(f"only {human_bytes(disk)} free on the disk of its home (need at least {human_bytes(DISK_FAIL_BYTES)})")
    elif disk < DISK_WARN_BYTES:
        problems_warn.append(f"only {human_bytes(disk)} free on the disk of its home")
    if memory < MEMORY_FAIL_BYTES:
        problems_fail.append(f"only {human_bytes(memory)} of memory available (need at least {human_bytes(MEMORY_FAIL_BYTES)})")
    elif memory < MEMORY_WARN_BYTES:
        problems_warn.append(f"only {human_bytes(memory)} of memory available")
    if problems_fail:
        return failed(node, "resources", f"{node} has {' and '.join(problems_fail + problems_warn)}; free some space "
                      "(old runs are in ~/corral/runs) or close programs before training.", detail)
    if problems_warn:
        return warned(node, "resources", f"{node} has {' and '.join(problems_warn)}; a large model or long run may not "
                      f"fit (warning below {human_bytes(DISK_WARN_BYTES)} disk or {human_bytes(MEMORY_WARN_BYTES)} memory).",
                      detail)
    return passed(node, "resources", detail)


def mpi_address_result(node: str, facts: NodeFacts, network: str | None) -> CheckResult:
    if network is None:
        return failed(node, "mpi-address", f"{node}: corral does not know which network MPI should use (node addresses "
                      "are host names); set it with `corral network CIDR`, e.g. `corral network 192.168.1.0/24`.")
    address = address_in(facts.addresses, network)
    if address is None:
        have = ", ".join(f"{a.ip} ({a.interface})" for a in facts.addresses if not a.ip.startswith("127.")) or "none"
        return failed(node, "mpi-address", f"{node} has no address in {network} (it has {have}): connect its cable "
                      f"(e.g. Thunderbolt) to that network, or choose another network with `corral network`.",
                      "no address in the network")
    return passed(node, "mpi-address", f"{address.ip} on {address.interface}")


def majority_value(values: Mapping[str, str], order: Sequence[str]) -> str:
    """The most common value; a tie goes to the value of the earliest node (the head node first)."""
    counts = Counter(values.values())
    best = max(counts.values())
    return next(values[name] for name in order if name in values and counts[values[name]] == best)


def agreement_results(
    check: str,
    values: Mapping[str, str],
    order: Sequence[str],
    describe: Callable[[str, str, str, list[str]], str],
) -> list[CheckResult]:
    """Pass the nodes that hold the majority value; each other node fails with ``describe(node, its, majority, holders)``."""
    if not values:
        return []
    reference = majority_value(values, order)
    holders = [name for name in order if values.get(name) == reference]
    results = []
    for name in order:
        if name not in values:
            continue
        if values[name] == reference:
            results.append(passed(name, check, values[name]))
        else:
            results.append(failed(name, check, describe(name, values[name], reference, holders), values[name]))
    return results


def version_results(facts: Mapping[str, NodeFacts], venv_ok: Sequence[str], order: Sequence[str],
                    skip_reasons: Mapping[str, str]) -> list[CheckResult]:
    """``python-version`` and ``mlx-version`` for every node: compared among nodes whose venv works."""
    results: list[CheckResult] = []
    pythons = {name: facts[name].venv.python for name in venv_ok if facts[name].venv and facts[name].venv.python}  # type: ignore[union-attr]  # guarded
    mlxs = {name: facts[name].venv.mlx for name in venv_ok if facts[name].venv and facts[name].venv.mlx}  # type: ignore[union-attr]  # guarded

    def python_sentence(node: str, its: str, reference: str, holders: list[str]) -> str:
        return (f"{node}: Python {its} in the venv but {reference} on {join_names(holders)}; rebuild its venv from "
                f"Python {'.'.join(reference.split('.')[:2])} with `corral env --to {node} --python PATH`.")

    def mlx_sentence(node: str, its: str, reference: str, holders: list[str]) -> str:
        return f"{node}: mlx {its} in the venv but {reference} on {join_names(holders)}; run `corral env --to {node}` to reinstall it."

    results += agreement_results("python-version", pythons, order, python_sentence)
    results += agreement_results("mlx-version", mlxs, order, mlx_sentence)
    for name in order:
        if name not in venv_ok:
            reason = skip_reasons.get(name, "venv failed")
            results.append(skipped(name, "python-version", reason))
            results.append(skipped(name, "mlx-version", reason))
    return results


def mpirun_results(facts: Mapping[str, NodeFacts], order: Sequence[str]) -> list[CheckResult]:
    """Each node must have Open MPI's mpirun on the non-interactive PATH, all of one version."""
    results: list[CheckResult] = []
    versions: dict[str, str] = {}
    for name in order:
        node_facts = facts[name]
        if node_facts.mpirun_path is None:
            if node_facts.mpirun_elsewhere:
                found = node_facts.mpirun_elsewhere[0]
                folder = found.rsplit("/", 1)[0]
                results.append(failed(name, "mpirun", (
                    f"{name}: mpirun is in {folder} but not on the PATH of non-interactive SSH sessions, which is "
                    f"what mpirun uses to start ranks; add `export PATH={folder}:$PATH` to ~/.zshenv on {name} "
                    "(zsh, macOS) or near the top of ~/.bashrc (bash), before any line that returns early for "
                    "non-interactive shells."), f"{found} not on PATH"))
            else:
                results.append(failed(name, "mpirun", (
                    f"{name}: mpirun was not found; install Open MPI there (`sudo apt install openmpi-bin "
                    "libopenmpi-dev`; on a Mac `brew install open-mpi`)."), "not found"))
            continue
        implementation, version = parse_mpirun_version(node_facts.mpirun_version_text)
        if implementation != "Open MPI" or version is None:
            seen = implementation or (node_facts.mpirun_version_text.splitlines() or ["no output"])[0]
            results.append(failed(name, "mpirun", (
                f"{name}: {node_facts.mpirun_path} is not Open MPI's mpirun ({seen}); MLX's MPI backend and corral "
                "need Open MPI: install it (`sudo apt install openmpi-bin libopenmpi-dev`; on a Mac "
                "`brew install open-mpi`) and put it first on the PATH."), seen))
            continue
        versions[name] = version

    def sentence(node: str, its: str, reference: str, holders: list[str]) -> str:
        return (f"{node}: Open MPI {its} but {reference} on {join_names(holders)}; mpirun needs the same version on "
                f"every node: install Open MPI {reference} on {node}.")

    for result in agreement_results("mpirun", versions, order, sentence):
        detail = f"Open MPI {result.detail}"
        results.append(CheckResult(result.node, result.check, result.status, detail, result.fix))
    return results
