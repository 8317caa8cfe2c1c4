"""Config plumbing shared by ``mlpot train``, ``mlpot stable`` and ``mlpot pips train``.

Each command's config is a dataclass of sections (dataclasses) read from YAML; every key is checked
by type and range, unknown keys are refused by name, and ``--set section.key=value`` (value parsed
as YAML) overrides one key. ``--print-config`` prints the full config, defaults included
(:func:`config_yaml`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Dict

import yaml


def _within(value: float, limit: str) -> bool:
    """Whether ``value`` satisfies a range written as in :data:`mlpot.train.config.LIMITS`."""
    if limit.startswith(">="):
        return value >= float(limit[2:])
    if limit.startswith(">"):
        return value > float(limit[1:])
    low, high = (float(x) for x in limit[1:-1].split(","))
    above = value >= low if limit[0] == "[" else value > low
    below = value <= high if limit[-1] == "]" else value < high
    return above and below


def checked_setting(name: str, annotation: str, value: Any, limit: str | None = None) -> Any:
    """``value`` if it fits the field type ``annotation`` (as written in the dataclass, e.g. ``"int | None"``)
    and the range ``limit`` (written as in :data:`mlpot.train.config.LIMITS`: ">= a", "> a" or
    "[a, b)"); else ``ValueError`` naming ``name``, the value and what is expected.
    Integers given for a float key become floats."""
    optional = annotation.endswith("| None")
    kind = annotation.replace("| None", "").strip()
    if value is None and optional:
        return None
    expected = {
        "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
        "List[str]": "a list of strings", "Dict[str, Any]": "a mapping",
    }[kind]
    if limit:
        expected += f" {limit}" if limit[0] in "<>" else f" in {limit}"
    if optional:
        expected += " or null"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": is_number and math.isfinite(value),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "List[str]": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
        "Dict[str, Any]": isinstance(value, dict),
    }[kind]
    if not fits or (limit and not _within(value, limit)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value) if kind == "float" else list(value) if kind == "List[str]" else value


def renamed_key(section_type, key: str) -> str:
    """The current name of ``key`` in ``section_type``: a section lists the keys it renamed as a class attribute
    ``RENAMED_KEYS = {"old": "new"}``, so YAML files and saved configs of older runs still read."""
    return getattr(section_type, "RENAMED_KEYS", {}).get(key, key)


def config_section(section_type, values: Dict[str, Any], name: str):
    """The dataclass ``section_type`` built from a YAML mapping; unknown keys are refused by name, renamed
    keys (:func:`renamed_key`) are read under their new name."""
    if not isinstance(values, dict):
        raise ValueError(f"config section {name!r} must be a mapping")
    for old, new in getattr(section_type, "RENAMED_KEYS", {}).items():
        if old in values:
            if new in values:
                raise ValueError(f"config section {name!r} sets both {new} and its old name {old}")
            values = {(new if key == old else key): value for key, value in values.items()}
    known = {f.name for f in dataclasses.fields(section_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section {name!r}; known: {sorted(known)}")
    return section_type(**values)


def read_yaml_config(path: str | Path, from_dict: Callable[[Dict[str, Any]], Any]) -> Any:
    """Read a YAML file and build a config from it with ``from_dict``; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    try:
        return from_dict(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def parse_assignment(assignment: str, expected: str) -> tuple[str, Any]:
    """``NAME=VALUE`` → (NAME, VALUE parsed as YAML: numbers, lists, null, strings), the one parser of
    every command's ``--set``; a ValueError says the assignment must look like ``expected``."""
    name, separator, text = assignment.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"override {assignment!r} must look like {expected}")
    return name.strip(), yaml.safe_load(text)


def apply_override(config: Any, assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to ``config`` in place.

    ``config`` is any dataclass whose sections are dataclass fields (:class:`TrainConfig`,
    :class:`mlpot.stable.config.StableConfig`)."""
    expected = "section.key=value, e.g. training.lr=0.01"
    dotted, value = parse_assignment(assignment, expected)
    if "." not in dotted:
        raise ValueError(f"override {assignment!r} must look like {expected}")
    section_name, key = dotted.split(".", 1)
    sections = [f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]
    if section_name not in sections:
        raise ValueError(f"override {assignment!r}: unknown section {section_name!r}; known: {sections}")
    section = getattr(config, section_name)
    key = renamed_key(type(section), key)
    if key not in {f.name for f in dataclasses.fields(section)}:
        raise ValueError(f"override {assignment!r}: unknown key {key!r} in section {section_name!r}")
    setattr(section, key, value)


def config_yaml(config: Any) -> str:
    """The whole config (a dataclass of sections), defaults included, as the YAML a command reads back."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
