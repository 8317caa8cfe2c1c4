"""Every repository path named in the documentation exists, and nothing cites a file outside the repository.

Scanned: README.md, CHANGELOG.md, docs/*.md, benchmarks/README.md, systems/**/README.md, and the docstrings
and comments of the Python files under mlpot/ and plugins/. A path is a token that starts with one of the
top-level folders below and ends with a file extension or a slash; tokens with a placeholder (<, >, *, {, })
are skipped.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tokenize
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL_FOLDERS = ("mlpot", "plugins", "systems", "benchmarks", "tests", "docs")
PLACEHOLDER_CHARACTERS = set("<>*{}")
# a candidate: a top-level folder name not preceded by a path character, then path characters
CANDIDATE = re.compile(r"(?<![\w./~-])(?:" + "|".join(TOP_LEVEL_FOLDERS) + r")/[\w./<>*{}+-]*")
FILE_EXTENSION = re.compile(r"\.[A-Za-z0-9]+$")
# written in two pieces so that this file does not name them itself
OUTSIDE_CITATIONS = ("shared" + "/reference", "../" + "shared")


def documentation_files() -> List[Path]:
    """The Markdown files whose paths are checked."""
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "systems").rglob("README.md"))
    return [path for path in files if path.is_file()]


def python_files() -> List[Path]:
    """The Python files whose docstrings and comments are checked."""
    return sorted(path for folder in ("mlpot", "plugins") for path in (ROOT / folder).rglob("*.py"))


def docstrings_and_comments(source: str) -> Iterator[str]:
    """The module, class and function docstrings and the comments of a Python source."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield docstring
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.string


def named_paths(text: str) -> Iterator[str]:
    """Repository-relative paths named in ``text`` (trailing punctuation removed; placeholders and the
    files a shell command writes, ``> path``, skipped)."""
    for match in CANDIDATE.finditer(text):
        token = match.group(0).rstrip(".,;:)")
        if PLACEHOLDER_CHARACTERS & set(token) or text[:match.start()].rstrip(" ").endswith(">"):
            continue
        if token.endswith("/") or FILE_EXTENSION.search(token):
            yield token


def missing_paths() -> List[Tuple[str, str]]:
    """(file that names it, path) for every named path that does not exist."""
    missing = []
    texts = [(path, path.read_text(encoding="utf-8")) for path in documentation_files()]
    texts += [(path, "\n".join(docstrings_and_comments(path.read_text(encoding="utf-8")))) for path in python_files()]
    for path, text in texts:
        for named in named_paths(text):
            if not (ROOT / named).exists():
                missing.append((str(path.relative_to(ROOT)), named))
    return missing


def test_path_recogniser_finds_paths_and_skips_placeholders():
    text = ("See `docs/pips.md`, mlpot/units.py. and benchmarks/results/*.json, systems/<name>/, "
            "runs/demo/train/model.pt, mlpot.md and https://example.org/tests/x.py and mlpot/md/. "
            "python x.py > systems/run.log")
    assert list(named_paths(text)) == ["docs/pips.md", "mlpot/units.py", "mlpot/md/"]


def test_docstring_and_comment_extraction():
    source = '"""Module: see docs/a.md."""\n# comment names plugins/b.py\nx = "mlpot/not_a_docstring.py"\n'
    found = "\n".join(docstrings_and_comments(source))
    assert "docs/a.md" in found and "plugins/b.py" in found and "not_a_docstring" not in found


def test_every_path_named_in_the_documentation_exists():
    missing = missing_paths()
    assert not missing, "paths named but not in the repository:\n" + "\n".join(f"  {where}: {named}"
                                                                              for where, named in missing)


def test_nothing_cites_a_file_outside_the_repository():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    command = ["git", "grep", "-l", "-F"]
    for citation in OUTSIDE_CITATIONS:
        command += ["-e", citation]
    found = subprocess.run(command + ["--", ".", ":!.ci"], cwd=ROOT, capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    assert found.stdout == "", "files citing paths outside the repository:\n" + found.stdout
