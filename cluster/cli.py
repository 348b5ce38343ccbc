"""The ``corral`` command: a thin argparse front end over the async core (the GUI calls the same core).

Imports of the heavy modules (asyncssh, zeroconf, yaml) happen inside each command, so a command
starts in a fraction of a second: ``corral exec`` is measured against pdsh.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cluster.table import format_table  # the command front ends (cli_sync, cli_env, …) print with it

if TYPE_CHECKING:
    from cluster.fleet import NodeOutcome
    from cluster.home import CorralHome
    from cluster.inventory import Inventory, Node

log = logging.getLogger("corral")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Turn the machines of your home lab into one training cluster.",
        epilog="Run `corral COMMAND --help` for a command's options.",
    )
    parser.add_argument("--home", metavar="DIR", help="corral's state directory (default: $CORRAL_HOME, "
                        "else the platform's config directory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to the terminal too")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    node = commands.add_parser("node", help="add, list, remove or import the cluster's nodes")
    node_commands = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    add = node_commands.add_parser("add", help="add a node by address ([USER@]HOST[:PORT])")
    add.add_argument("address", help="IP address or host name, optionally USER@HOST:PORT")
    add.add_argument("--user", help="login user on the node (default: yours, as ssh does)")
    add.add_argument("--port", type=int, help="SSH port (default 22)")
    add.add_argument("--name", help="the node's name in corral (default: from the host name, or nodeN)")
    add.add_argument("--slots", type=int, default=1, help="MPI ranks to run on it (default 1)")
    listing = node_commands.add_parser("list", help="show the nodes")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    remove = node_commands.add_parser("remove", help="remove a node from the cluster")
    remove.add_argument("name")
    imported = node_commands.add_parser("import", help="add the nodes of an Open MPI hostfile, an MLX hosts JSON, "
                                        "or hosts of an ssh config (e.g. ~/.ssh/config studio mini)")
    imported.add_argument("file")
    imported.add_argument("hosts", nargs="*", metavar="HOST", help="for an ssh config: the Host aliases to import")
    forget = node_commands.add_parser("forget-host-key", help="drop a node's accepted host key (after a reinstall)")
    forget.add_argument("name")

    network = commands.add_parser("network", help="show or set the network MPI uses (a CIDR)")
    network.add_argument("cidr", nargs="?", help="e.g. 169.254.0.0/16 for a Thunderbolt bridge")
    network.add_argument("--auto", action="store_true", help="go back to the nodes' own subnet")

    discover = commands.add_parser("discover", help="find SSH hosts on the local network")
    discover.add_argument("--subnet", action="append", metavar="CIDR", help="sweep this subnet (repeatable; "
                          "default: this computer's local subnets)")
    discover.add_argument("--timeout-s", type=float, default=2.0, help="how long to look (default 2)")
    discover.add_argument("--json", action="store_true", help="machine-readable output")
    discover.add_argument("--no-mdns", action="store_true", help="skip the mDNS browse")
    discover.add_argument("--no-sweep", action="store_true", help="skip the port-22 sweep")

    keys = commands.add_parser("keys", help="install corral's SSH key on nodes (asks each password once) "
                               "and set up node-to-node access")
    keys.add_argument("names", nargs="*", metavar="NAME", help="nodes to set up (default: all)")
    keys.add_argument("--password-stdin", action="store_true", help="read passwords from standard input: "
                      "one line for all nodes, or one line per node in order")
    keys.add_argument("--accept-new", action="store_true", help="accept host keys never seen before "
                      "(their fingerprints are printed)")
    keys.add_argument("--no-mesh", action="store_true", help="skip node-to-node access")

    run = commands.add_parser("exec", help="run a command on all (or the named) nodes at once",
                              usage="corral exec [NAME ...] -- COMMAND [ARGS ...]")
    run.add_argument("names", nargs="*", metavar="NAME")
    run.add_argument("--timeout-s", type=float, help="give up on a node after this long")

    sync = commands.add_parser("sync", help="copy the project's code to every node (rsync, in parallel)")
    sync.add_argument("path", nargs="?", help="the project folder (default: the last one synced, else here)")
    sync.add_argument("--to", action="append", metavar="NAME", help="only these nodes (repeatable)")
    sync.add_argument("--exclude", action="append", metavar="PATTERN", help="skip files matching (repeatable; "
                      ".gitignore is honoured too)")

    env = commands.add_parser("env", help="make the same Python environment (venv with MLX, mpi4py and your "
                              "requirements) on every node")
    env.add_argument("--requirements", metavar="FILE", help="a requirements.txt to install too")
    env.add_argument("--python", metavar="PATH", help="the Python on the nodes to build the venv from "
                     "(default: python3, 3.10 or newer)")
    env.add_argument("--wheels", choices=["online", "push"], default="online", help="online: each node downloads "
                     "from the package index; push: this computer downloads and copies them (nodes need no network)")
    env.add_argument("--to", action="append", metavar="NAME", help="only these nodes (repeatable)")

    doctor = commands.add_parser("doctor", help="check that the cluster can train, node by node")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    from cluster.cli_train import add_parsers as add_run_parsers

    add_run_parsers(commands)

    export = commands.add_parser("export", help="write hostfile, hosts.json, ssh_config and mpirun.sh")
    export.add_argument("directory", metavar="DIR")

    ssh_config = commands.add_parser("ssh-config", help="print, install or uninstall the cluster's ssh config")
    group = ssh_config.add_mutually_exclusive_group()
    group.add_argument("--install", action="store_true", help="add one Include line to ~/.ssh/config")
    group.add_argument("--uninstall", action="store_true", help="remove that line again")
    ssh_config.add_argument("--file", metavar="PATH", help="the ssh config to edit (default ~/.ssh/config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is the remote command, verbatim (argparse would try to read its options).
    remote_argv: list[str] = []
    if "--" in args_list:
        split = args_list.index("--")
        args_list, remote_argv = args_list[:split], args_list[split + 1 :]
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        return show_overview(parser, args)

    from cluster.errors import ClusterError
    from cluster.home import resolve_home

    home = resolve_home(args.home)
    setup_logging(home, verbose=args.verbose)
    handler = COMMANDS[args.command]
    try:
        if args.command == "exec":
            return handler(home, args, remote_argv)
        if remote_argv:
            parser.error(f"`--` is only used with `corral exec`; got extra arguments {remote_argv}")
        return handler(home, args)
    except ClusterError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("corral: interrupted", file=sys.stderr)
        return 130


def setup_logging(home: CorralHome, *, verbose: bool) -> None:
    """Log to corral's home (never passwords), and to the terminal with -v."""
    handlers: list[logging.Handler] = []
    try:
        home.ensure()
        home.log_path.parent.mkdir(exist_ok=True)
        handlers.append(logging.FileHandler(home.log_path))
    except OSError as exc:
        print(f"corral: cannot write the log in {home.log_path.parent} ({exc.strerror}); continuing without it",
              file=sys.stderr)
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # asyncssh logs every channel at INFO; corral's own lines say what matters.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def show_overview(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from cluster.errors import ClusterError
    from cluster.home import resolve_home
    from cluster.state import load_cluster

    home = resolve_home(args.home)
    try:
        inventory = load_cluster(home)
    except ClusterError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        inventory = None
    parser.print_help()
    print()
    if inventory is None or not inventory.nodes:
        print(f"No cluster yet in {home.root}. Start with `corral discover`, then `corral node add ADDRESS`.")
    else:
        print(f"Cluster in {home.root}: {len(inventory.nodes)} nodes, {inventory.total_slots()} slots.")
    return EXIT_OK


# --- node ----------------------------------------------------------------------------------------


def cmd_node(home: CorralHome, args: argparse.Namespace) -> int:
    from cluster.state import load_cluster, save_cluster

    inventory = load_cluster(home)
    action = args.node_command
    if action == "list":
        return print_nodes(inventory, as_json=args.json)
    if action == "add":
        node = node_from_args(inventory, args)
        save_cluster(home, inventory.with_node(node))
        log.info("node added: %s", node.describe())
        print(f"Added {node.describe()}. Next: `corral keys {node.name}` to install corral's key.")
        return EXIT_OK
    if action == "remove":
        removed = inventory.node(args.name)
        save_cluster(home, inventory.without(args.name))
        log.info("node removed: %s", removed.describe())
        print(f"Removed {removed.describe()}. (`corral node add {removed.destination}:{removed.port} "
              f"--name {removed.name} --slots {removed.slots}` adds it back.)")
        return EXIT_OK
    if action == "import":
        return import_nodes(home, inventory, args.file, args.hosts)
    if action == "forget-host-key":
        from cluster.known_hosts import KnownHosts

        node = inventory.node(args.name)
        removed_count = KnownHosts(home.known_hosts_path).forget(node)
        print(f"Forgot {removed_count} host key(s) of {node.describe()}." if removed_count
              else f"No host key was accepted for {node.describe()}.")
        return EXIT_OK
    raise AssertionError(action)


def node_from_args(inventory: Inventory, args: argparse.Namespace) -> Node:
    from cluster.errors import ClusterError
    from cluster.inventory import DEFAULT_SSH_PORT, Node, default_node_name, local_user, split_destination

    from cluster.inventory_file import address_problem, name_problem, user_problem

    user, address, port = split_destination(args.address)
    port = args.port if args.port is not None else (port or DEFAULT_SSH_PORT)
    if not 1 <= port <= 65535:
        raise ClusterError(f"--port: {port} is not a TCP port (1 to 65535).")
    if args.slots < 1:
        raise ClusterError(f"--slots: {args.slots} must be at least 1 (the number of ranks on this node).")
    name = args.name or default_node_name(address, inventory)
    user = args.user or user or local_user()
    for what, problem in (("ADDRESS", address_problem(address)), ("--name", name_problem(name)),
                          ("--user", user_problem(user))):
        if problem:
            raise ClusterError(f"{what}: {problem}.")
    return Node(name=name, address=address, port=port, user=user, slots=args.slots)


def print_nodes(inventory: Inventory, *, as_json: bool) -> int:
    rows = [
        {"name": n.name, "address": n.address, "port": n.port, "user": n.user, "slots": n.slots}
        for n in inventory.nodes
    ]
    if as_json:
        print(json.dumps({"network": inventory.effective_network(), "nodes": rows}, indent=2))
        return EXIT_OK
    if not rows:
        print("No nodes yet: add one with `corral node add ADDRESS` (or find them with `corral discover`).")
        return EXIT_OK
    print(format_table(["NAME", "ADDRESS", "PORT", "USER", "SLOTS"],
                       [[r["name"], r["address"], r["port"], r["user"], r["slots"]] for r in rows]))
    source = "set" if inventory.network else "the nodes' subnet"
    print(f"\nMPI network: {inventory.effective_network() or 'not set'} ({source})")
    return EXIT_OK


def import_nodes(home: CorralHome, inventory: Inventory, file: str, hosts: Sequence[str]) -> int:
    from pathlib import Path

    from cluster.errors import ClusterError
    from cluster.hostfile import parse_host_list_file
    from cluster.ssh_config_import import looks_like_ssh_config, nodes_from_ssh_config
    from cluster.state import save_cluster

    path = Path(file).expanduser()
    text = path.read_text(errors="replace") if path.is_file() else ""
    if looks_like_ssh_config(text):
        nodes = nodes_from_ssh_config(text, file, hosts, taken_names=inventory.names())
    elif hosts:
        raise ClusterError(f"{file}: HOST names are only for an ssh config; a hostfile is imported whole.")
    else:
        nodes = parse_host_list_file(path, taken_names=inventory.names())
    for node in nodes:
        inventory = inventory.with_node(node)
    save_cluster(home, inventory)
    print(f"Imported {len(nodes)} node(s) from {file}: {', '.join(n.name for n in nodes)}.")
    return EXIT_OK


def cmd_network(home: CorralHome, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cluster.errors import ClusterError
    from cluster.inventory_file import network_problem
    from cluster.state import load_cluster, save_cluster

    inventory = load_cluster(home)
    if args.cidr and (problem := network_problem(args.cidr)):
        raise ClusterError(f"network: {problem}.")
    if args.auto or args.cidr:
        network = None if args.auto else args.cidr
        inventory = replace(inventory, network=network)
        save_cluster(home, inventory)
    source = "set" if inventory.network else "the nodes' own subnet"
    print(f"MPI network: {inventory.effective_network() or 'not set (add nodes first)'} ({source})")
    return EXIT_OK


# --- discover ------------------------------------------------------------------------------------


def cmd_discover(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.discovery import discover, format_found_hosts, found_hosts_to_json

    hosts = asyncio.run(discover(args.subnet, timeout_s=args.timeout_s,
                                 use_mdns=not args.no_mdns, use_sweep=not args.no_sweep))
    if args.json:
        print(json.dumps(found_hosts_to_json(hosts), indent=2))
    elif hosts:
        print(format_found_hosts(hosts))
        print(f"\n{len(hosts)} SSH host(s) found. Add one with `corral node add ADDRESS --user USER`.")
    else:
        print("No SSH hosts found. On a Mac, turn on Remote Login (System Settings › General › Sharing); "
              "or give the subnet with --subnet 192.168.1.0/24.")
    return EXIT_OK


# --- keys ----------------------------------------------------------------------------------------


def cmd_keys(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.state import load_cluster

    inventory = load_cluster(home)
    selected = inventory.select(args.names)
    if not selected:
        print("No nodes yet: add one with `corral node add ADDRESS`.", file=sys.stderr)
        return EXIT_FAILED
    passwords = PasswordSource.from_args(args, selected)
    return asyncio.run(run_keys(home, inventory, selected, passwords, accept_new=args.accept_new,
                                mesh=not args.no_mesh))


class PasswordSource:
    """Passwords kept in memory only: from stdin lines (one shared or one per node) or asked per node."""

    def __init__(self, by_node: dict[str, str] | None, interactive: bool) -> None:
        self._by_node = by_node
        self._interactive = interactive
        self._last: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, nodes: Sequence[Node]) -> PasswordSource:
        from cluster.errors import ClusterError

        if not args.password_stdin:
            return cls(None, interactive=sys.stdin.isatty())
        lines = [line.rstrip("\r\n") for line in sys.stdin.readlines()]
        lines = [line for line in lines if line]
        if not lines:  # nothing piped: only nodes that already accept corral's key can succeed
            return cls({}, interactive=False)
        if len(lines) == 1:
            return cls({node.name: lines[0] for node in nodes}, interactive=False)
        if len(lines) == len(nodes):
            return cls({node.name: line for node, line in zip(nodes, lines)}, interactive=False)
        raise ClusterError(
            f"--password-stdin read {len(lines)} non-empty line(s) for {len(nodes)} node(s) "
            f"({', '.join(n.name for n in nodes)}): give one line for all of them, or one per node in that order."
        )

    async def ask(self, node: Node) -> str | None:
        import getpass

        if self._by_node is not None:
            return self._by_node.get(node.name)
        if not self._interactive:
            return None
        hint = " (Enter: same as the previous one)" if self._last else ""
        prompt = f"Password for {node.user}@{node.address} ({node.name}){hint}: "
        typed = await ask_on_terminal(getpass.getpass, prompt)
        password = typed or self._last
        self._last = password
        return password


async def run_keys(home: CorralHome, inventory: Inventory, selected: Sequence[Node], passwords: PasswordSource,
                   *, accept_new: bool, mesh: bool) -> int:
    import asyncio

    from cluster.fleet import for_each_node
    from cluster.keys import KeySetup, ensure_key_pair
    from cluster.known_hosts import KnownHosts
    from cluster.mesh import build_mesh
    from cluster.ssh import Credentials, open_session

    ensure_key_pair(home)
    known_hosts = KnownHosts(home.known_hosts_path)
    # Prompts are asked one at a time even though nodes are set up concurrently.
    prompt_lock = asyncio.Lock()

    async def confirm(node: Node, fingerprint: str) -> bool:
        if accept_new:
            print(f"{node.name}: accepted new host key {fingerprint}", file=sys.stderr)
            log.info("accepted host key %s for %s", fingerprint, node.describe())
            return True
        if not sys.stdin.isatty():
            return False
        async with prompt_lock:
            answer = await ask_on_terminal(input, f"{node.describe()} host key is {fingerprint}. Trust it? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    async def ask_password(node: Node) -> str | None:
        async with prompt_lock:
            return await passwords.ask(node)

    setup = KeySetup(home, known_hosts, confirm, ask_password)
    outcomes = await for_each_node(selected, setup.install)
    failed = [o for o in outcomes if not o.ok]
    print_outcomes(outcomes, ok_text="corral's key works")
    sessions = {o.node.name: o.value for o in outcomes if o.ok}
    try:
        if mesh and len(inventory.nodes) > 1:
            # Unselected nodes join the mesh too (they must learn about the new ones), by key only.
            others = [n for n in inventory.nodes if n.name not in {s.name for s in selected}]
            credentials = Credentials(private_key_path=home.private_key_path)
            other_outcomes = await for_each_node(others, lambda n: open_session(n, credentials, known_hosts))
            for outcome in other_outcomes:
                if outcome.ok:
                    sessions[outcome.node.name] = outcome.value
                else:
                    failed.append(outcome)
                    print(f"{outcome.node.name}: left out of node-to-node access: {outcome.message}", file=sys.stderr)
            report = await build_mesh(sessions, list(inventory.nodes), known_hosts)  # type: ignore[arg-type]
            for name, reached in report.reached.items():
                print(f"{name}: reaches {len(reached)} other node(s) by key" + (f" ({', '.join(reached)})" if reached else ""))
            for messages in report.failures.values():
                for message in messages:
                    print(message, file=sys.stderr)
            if not report.ok:
                return EXIT_FAILED
    finally:
        await asyncio.gather(*(s.close() for s in sessions.values() if s is not None), return_exceptions=True)
    return EXIT_FAILED if failed else EXIT_OK


async def ask_on_terminal(prompt_function: Callable[[str], str], prompt: str) -> str:
    """Ask on the terminal without blocking the event loop, and let Ctrl-C end corral at once.

    ``asyncio.to_thread`` would make ``asyncio.run`` wait, after Ctrl-C, for the blocked read to
    finish; a daemon thread does not hold up the exit. The terminal's settings are restored either way,
    since getpass turns echo off and only turns it back on when its read returns.
    """
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: BaseException | None) -> None:
        if not answer.done():
            answer.set_exception(error) if error is not None else answer.set_result(value or "")

    def read() -> None:
        try:
            value, error = prompt_function(prompt), None
        except BaseException as exc:  # noqa: BLE001 - EOF or ^D at the prompt is handed to the waiting coroutine
            value, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:
            pass  # corral is already shutting down

    saved = _terminal_settings()
    threading.Thread(target=read, name="corral-prompt", daemon=True).start()
    try:
        return await answer
    except asyncio.CancelledError:
        _restore_terminal(saved)
        print(file=sys.stderr)
        raise


def _terminal_settings() -> object:
    try:
        import termios

        return termios.tcgetattr(sys.stdin.fileno())
    except (ImportError, OSError, ValueError):
        return None


def _restore_terminal(saved: object) -> None:
    if saved is None:
        return
    import termios

    try:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    except (OSError, ValueError):
        pass


def print_outcomes(outcomes: Sequence[NodeOutcome[object]], *, ok_text: str) -> None:
    for outcome in outcomes:
        if outcome.ok:
            print(f"{outcome.node.name}: {ok_text}")
        else:
            print(f"corral: {outcome.message}", file=sys.stderr)


# --- exec ----------------------------------------------------------------------------------------


def cmd_exec(home: CorralHome, args: argparse.Namespace, remote_argv: list[str]) -> int:
    import asyncio

    from cluster.errors import ClusterError
    from cluster.state import load_cluster

    if not remote_argv:
        raise ClusterError("No command given: put it after `--`, e.g. `corral exec -- hostname`.")
    inventory = load_cluster(home)
    nodes = inventory.select(args.names)
    if not nodes:
        raise ClusterError("No nodes yet: add one with `corral node add ADDRESS`.")
    return asyncio.run(run_exec(home, nodes, remote_argv, timeout_s=args.timeout_s))


async def run_exec(home: CorralHome, nodes: Sequence[Node], remote_argv: list[str], *, timeout_s: float | None) -> int:
    from cluster.fanout import run_on_nodes
    from cluster.known_hosts import KnownHosts
    from cluster.ssh import Credentials, SessionPool

    width = max(len(node.name) for node in nodes)

    def on_line(node: Node, stream: str, line: str) -> None:
        target = sys.stdout if stream == "stdout" else sys.stderr
        target.write(f"{node.name:<{width}} | {line}\n")

    credentials = Credentials(private_key_path=home.private_key_path)
    async with SessionPool(credentials, KnownHosts(home.known_hosts_path)) as pool:
        outcomes = await run_on_nodes(pool, nodes, remote_argv, on_line=on_line, timeout_s=timeout_s)
    sys.stdout.flush()
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        print(f"corral: {outcome.message}", file=sys.stderr)
    if failed:
        print(f"corral: {len(nodes) - len(failed)} of {len(nodes)} node(s) succeeded; failed: "
              f"{', '.join(o.node.name for o in failed)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# --- export and ssh-config ------------------------------------------------------------------------


def cmd_export(home: CorralHome, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cluster.export import export_cluster
    from cluster.state import load_cluster

    result = export_cluster(load_cluster(home), home, Path(args.directory))
    print(f"Wrote {', '.join(str(p) for p in result.files)}\n")
    print("Run a program on every node with Open MPI:")
    print(f"  {result.directory / 'mpirun.sh'} PROGRAM [ARGS...]")
    print(f"  {result.mpirun_command}\n")
    print("With MLX's launcher (ring backend; run `corral ssh-config --install` first so `ssh NODE` works):")
    print(f"  {result.mlx_launch_command}")
    return EXIT_OK


def cmd_ssh_config(home: CorralHome, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cluster.ssh_config import install_include, uninstall_include, user_ssh_config_path, write_client_ssh_config
    from cluster.state import load_cluster

    target = Path(args.file).expanduser() if args.file else user_ssh_config_path()
    if args.install:
        write_client_ssh_config(load_cluster(home).nodes, home)
        changed = install_include(home, target)
        print(f"{'Added' if changed else 'Already present:'} `Include {home.ssh_config_path}` in {target}; "
              "`ssh NODE` now reaches the cluster's nodes.")
        return EXIT_OK
    if args.uninstall:
        changed = uninstall_include(home, target)
        print(f"Removed corral's Include from {target}." if changed else f"{target} had no Include of corral's.")
        return EXIT_OK
    path = write_client_ssh_config(load_cluster(home).nodes, home)
    print(path.read_text(), end="")
    return EXIT_OK


def cmd_sync(home: CorralHome, args: argparse.Namespace) -> int:
    from cluster.cli_sync import run_sync_command

    return run_sync_command(home, args)


def cmd_env(home: CorralHome, args: argparse.Namespace) -> int:
    from cluster.cli_env import run_env_command

    return run_env_command(home, args)


def cmd_doctor(home: CorralHome, args: argparse.Namespace) -> int:
    from cluster.cli_doctor import run_doctor_command

    return run_doctor_command(home, args)


def cmd_run(home: CorralHome, args: argparse.Namespace) -> int:
    from cluster import cli_train

    return getattr(cli_train, f"run_{args.command}_command")(home, args)


COMMANDS = {
    "node": cmd_node,
    "network": cmd_network,
    "discover": cmd_discover,
    "keys": cmd_keys,
    "exec": cmd_exec,
    "sync": cmd_sync,
    "env": cmd_env,
    "doctor": cmd_doctor,
    "export": cmd_export,
    "ssh-config": cmd_ssh_config,
    **{name: cmd_run for name in ("train", "logs", "attach", "status", "stop", "runs", "adapters", "demo")},
}


if __name__ == "__main__":
    sys.exit(main())
