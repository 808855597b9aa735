"""The command line's dispatch: a command group without its sub-command prints that group's help,
and a command module that cannot be imported is reported, never dropped from --help."""

from __future__ import annotations

import sys

import pytest

from datascout.cli import COMMAND_MODULES, build_parser, main


@pytest.mark.parametrize("group", ["campaign", "index", "embed", "datasets"])
def test_a_group_without_its_sub_command_prints_its_own_help(group, capsys):
    assert main([group]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"usage: datascout {group}")


def test_every_command_module_is_listed_in_help(capsys):
    build_parser().print_help()
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert f"    {name}" in out


def test_a_command_module_that_fails_to_import_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datascout.cli.prune", None)  # importing it raises
    build_parser().print_help()
    out = capsys.readouterr().out
    assert "prune" in out and "cannot be loaded" in out
    assert main(["prune", "--embeddings", "E.npy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("datascout: error: the 'prune' command cannot be loaded (")
    assert err.count("\n") == 1
    assert main(["index"]) == 2  # the other commands still load
    assert capsys.readouterr().out.startswith("usage: datascout index")


def test_ray_embedding_reports_shards_with_the_library_progress_bar(capsys):
    from argparse import Namespace

    from datascout.cli.embed import _shard_progress

    assert _shard_progress(Namespace(quiet=True)) is None
    advance = _shard_progress(Namespace(quiet=False))
    advance(1, 2)
    advance(2, 2)
    err = capsys.readouterr().err  # not a terminal: one line per update
    assert "shards written: 1/2" in err and "shards written: 2/2" in err
