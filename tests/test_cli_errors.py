"""Every error of the ``mlpot`` command line reaches the user as one line; ``--debug`` shows the traceback."""

from __future__ import annotations

import argparse

import pytest

import mlpot
from mlpot import cli


def _parser_whose_info_command_raises(error: BaseException):
    real = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = real()

        def fail(args):
            raise error

        parser.set_defaults(func=fail)
        for action in parser._subparsers._group_actions:  # every sub-command calls ``fail``
            for sub in action.choices.values():
                sub.set_defaults(func=fail)
        return parser

    return build


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlpot {mlpot.__version__}"


def test_unwritable_output_is_one_line_with_exit_code_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["new-model", "--arch", "egnn", "--species", "H", "--hp", "hidden=4", "--hp", "num_layers=1",
                     "-o", str(blocker / "model.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("mlpot new-model: error:") and "Traceback" not in err


def test_a_multi_line_message_is_folded_into_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_parser", _parser_whose_info_command_raises(RuntimeError("first\n  second")))
    assert cli.main(["info", "x.pt"]) == 2
    assert capsys.readouterr().err.strip() == "mlpot info: error: first second"


def test_an_internal_error_is_one_line_exit_1_and_asks_for_debug(monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_parser", _parser_whose_info_command_raises(AttributeError("no attribute 'x'")))
    assert cli.main(["info", "x.pt"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "internal error (AttributeError: no attribute 'x')" in err and "--debug" in err


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_original_exception(monkeypatch, how):
    monkeypatch.setattr(cli, "build_parser", _parser_whose_info_command_raises(AttributeError("no attribute 'x'")))
    argv = ["info", "x.pt"]
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("MLPOT_DEBUG", "1")
    with pytest.raises(AttributeError, match="no attribute 'x'"):
        cli.main(argv)
