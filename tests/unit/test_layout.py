"""Remote paths: relative to each node's home, distinct per project, safe as directory names."""

from cluster.layout import RemoteLayout, project_slug


def test_slug_is_readable_safe_and_distinct_per_path():
    a = project_slug("/home/me/work/train")
    b = project_slug("/home/me/other/train")
    assert a.startswith("train-") and b.startswith("train-") and a != b
    odd = project_slug("/tmp/my project $(rm -rf ~)'s")
    assert all(ch.isalnum() or ch in "._-" for ch in odd)
    assert project_slug("/home/me/work/train") == a  # stable


def test_layout_paths_are_relative_to_the_node_home():
    layout = RemoteLayout("train-1234abcd")
    for path in (layout.code_dir, layout.venv_dir, layout.venv_python, layout.env_stamp, layout.wheelhouse_dir):
        assert not path.startswith("/") and not path.startswith("~")
    assert layout.venv_python == "corral/venvs/train-1234abcd/bin/python"
