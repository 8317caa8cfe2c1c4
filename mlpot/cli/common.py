"""What every ``mlpot`` command shares: value parsing, the data-label options, one-line errors."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every command's help: each option's default shown as "(default: X)"; descriptions are wrapped paragraph
    by paragraph (a blank line separates paragraphs), and indented lines (examples) are printed as written.

    Options without a useful default (None, False, an empty list, or SUPPRESS) get no default text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == [] or default == argparse.SUPPRESS or "%(default)" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        blocks = []
        for paragraph in text.strip("\n").split("\n\n"):
            if paragraph.startswith((" ", "\t")):
                blocks.append(textwrap.indent(paragraph, indent))
            else:
                blocks.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                            subsequent_indent=indent))
        return "\n\n".join(blocks)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``mlpot`` and of each of its commands (and theirs): :class:`HelpFormatter` unless told, and
    :meth:`add_alias` for old spellings of options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._required_with_alias: List[argparse.Action] = []

    def add_alias(self, alias: str, option: argparse.Action) -> None:
        """Accept ``alias`` as a hidden old spelling of ``option`` (the action ``add_argument`` returned): the same
        destination and type, absent from ``--help``. A required option is then satisfied by either spelling."""
        self.add_argument(alias, dest=option.dest, type=option.type, metavar=option.metavar,
                          default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if option.required:
            option.required = False  # checked in parse_known_args, where either spelling counts
            option.help = f"{option.help} (required)"
            self._required_with_alias.append(option)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for option in self._required_with_alias:
            if getattr(namespace, option.dest, None) is None:
                self.error(f"the following arguments are required: {'/'.join(option.option_strings)}")
        return namespace, extras


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_hyperparameters(pairs: List[str]) -> Dict[str, Any]:
    """``["key=value", ...]`` (the ``--hp`` options) → ``{key: value}``; a value is read as JSON (numbers, true,
    lists), else kept as text."""
    result = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"mlpot: --hp expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        result[key.strip()] = _parse_value(value)
    return result


def add_config_arguments(p: argparse.ArgumentParser, example: str) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable) and ``--print-config`` of a command that reads a YAML config."""
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"override one config key, e.g. --set {example} (repeatable; the value is read as YAML)")
    p.add_argument("--print-config", action="store_true",
                   help="print the full resolved config (file, flags and --set, defaults included) as YAML and exit")


def data_spec(args):
    from mlpot.data import DataSpec

    return DataSpec(energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key,
                    energy_unit=args.energy_unit, length_unit=args.length_unit, index=args.index)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-key", default="energy", help="name of the energy label")
    p.add_argument("--forces-key", default="forces", help="name of the forces label")
    p.add_argument("--stress-key", default="stress", help="name of the stress or virial label")
    p.add_argument("--energy-unit", default="eV", help="eV, meV, kcal/mol, kJ/mol or Hartree")
    p.add_argument("--length-unit", default="Angstrom", help="Angstrom, nm or Bohr")
    p.add_argument("--index", default=":", help="frames to use, ASE syntax (':' = all)")


# Errors a user's input can cause (a bad file, value, folder, or a simulation that blew up): one line, exit 2.
EXPECTED_ERRORS = (ValueError, OSError, KeyError, TypeError, NotImplementedError, FloatingPointError, RuntimeError)


def _one_line(error: BaseException) -> str:
    """The error's message on one line (KeyError's quotes dropped, torch's multi-line text folded)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(message).split())
    return text or type(error).__name__


def _is_internal(error: BaseException) -> bool:
    """A programming error rather than bad input: Python's own complaints about calls and attributes."""
    text = str(error)
    return isinstance(error, TypeError) and ("positional argument" in text or "unexpected keyword" in text
                                              or "object is not callable" in text)
