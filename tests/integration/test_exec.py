"""corral exec against real sshd: attributed output, safe arguments, every node's outcome."""

from __future__ import annotations

import pytest

from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration


def test_every_node_answers_with_its_output_attributed(keyed_cluster):
    cluster, corral = keyed_cluster
    result = corral.ok("exec", "--", "hostname")
    lines = sorted(result.stdout.splitlines())
    assert lines == sorted(f"{node.name} | {node.hostname}" for node in cluster.nodes)


def test_arguments_are_never_run_as_shell(keyed_cluster):
    cluster, corral = keyed_cluster
    tricky = ["a b", "it's", 'say "hi"', "x; touch /tmp/pwned1", "$(touch /tmp/pwned2)", "`touch /tmp/pwned3`", "*", "=ls", "~", ""]
    result = corral.ok("exec", cluster.nodes[0].name, "--", "printf", "%s\\n", *tricky)
    assert [line.split(" | ", 1)[1] for line in result.stdout.splitlines()] == tricky
    leftovers = cluster.nodes[0].run(["sh", "-c", "ls /tmp/pwned* 2>/dev/null || true"]).stdout
    assert leftovers.strip() == ""


def test_named_nodes_only(keyed_cluster):
    cluster, corral = keyed_cluster
    names = [cluster.nodes[0].name, cluster.nodes[2].name]
    result = corral.ok("exec", *names, "--", "hostname")
    assert {line.split(" | ")[0].strip() for line in result.stdout.splitlines()} == set(names)


def test_a_failing_node_is_reported_and_the_others_succeed(keyed_cluster):
    cluster, corral = keyed_cluster
    # Homes differ per node: only the second node has /home/lab2.
    target = cluster.nodes[1]
    result = corral.run("exec", "--", "test", "-d", f"/home/{target.user}")
    assert result.returncode == 1
    for node in cluster.nodes:
        if node is target:
            assert f"corral: {node.name}: `test` exited with status 1" not in result.stderr
        else:
            assert f"corral: {node.name}: `test` exited with status 1" in result.stderr
    assert "1 of 3 node(s) succeeded" in result.stderr


def test_stderr_is_attributed_too(keyed_cluster):
    cluster, corral = keyed_cluster
    result = corral.run("exec", cluster.nodes[0].name, "--", "sh", "-c", "echo oops >&2; exit 4")
    assert result.returncode == 1
    assert f"{cluster.nodes[0].name} | oops" in result.stderr
    assert "exited with status 4: oops" in result.stderr


def test_unknown_node_name_gets_did_you_mean(keyed_cluster):
    cluster, corral = keyed_cluster
    result = corral.run("exec", "nod1", "--", "true")
    assert result.returncode == 1
    assert "Did you mean 'node1'?" in result.stderr


def test_exec_without_command_explains(keyed_cluster):
    _, corral = keyed_cluster
    result = corral.run("exec")
    assert result.returncode == 1
    assert "put it after `--`" in result.stderr
