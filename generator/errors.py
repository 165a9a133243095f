"""Errors that reach the user. Bad input exits 2 with `path:line:col: message` lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the user's input, at a position in a file (1-based line and column)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class AtlasError(Exception):
    """A failure the user can act on; printed without a traceback. Exit code 1."""

    exit_code = 1


class InputError(AtlasError):
    """Invalid input (manifest, corpus, weights). Carries every problem found. Exit code 2."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def problem_at(path: Path | str, message: str, line: int = 1, col: int = 1) -> Problem:
    return Problem(str(path), line, col, message)
