"""Explanations: a jsonl file of {"sae", "index", "text", "author", "score"} lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sae_atlas.errors import InputError, Problem, problem_at


@dataclass(frozen=True)
class Explanation:
    text: str  # markdown (sanitized at render time)
    author: str = ""
    score: float | None = None


def _col(line: str, key: str) -> int:
    """1-based column of `"key"` in the raw line (1 when absent)."""
    i = line.find(f'"{key}"')
    return i + 1 if i >= 0 else 1


def load_explanations(path: Path) -> dict[tuple[str, int], list[Explanation]]:
    """(sae id, feature index) -> explanations in file order. Every bad line is reported at once."""
    path = Path(path)
    out: dict[tuple[str, int], list[Explanation]] = {}
    problems: list[Problem] = []
    try:
        # Lines end at "\n" only: splitlines() would also break inside strings at U+2028, U+0085...
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError([problem_at(path, f"cannot read explanations ({e}); expected a UTF-8 jsonl file")]) from e
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(problem_at(path, f"invalid JSON ({e.msg}); expected one object per line", line_no, e.colno))
            continue
        if not isinstance(obj, dict):
            problems.append(problem_at(path, "not an object; expected {\"sae\", \"index\", \"text\", \"author\", \"score\"}", line_no, 1))
            continue
        sae, index, text = obj.get("sae"), obj.get("index"), obj.get("text")
        author, score = obj.get("author", ""), obj.get("score")
        bad = None
        if not isinstance(sae, str):
            bad = ("sae", 'missing or non-string "sae"; expected an SAE id MODEL@LAYER-SET')
        elif not isinstance(index, int) or isinstance(index, bool) or index < 0:
            bad = ("index", 'missing or invalid "index"; expected a feature index >= 0')
        elif not isinstance(text, str):
            bad = ("text", 'missing or non-string "text"; expected markdown text')
        elif author is not None and not isinstance(author, str):
            bad = ("author", '"author" is not a string; expected a name')
        elif score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            bad = ("score", '"score" is not a number; expected a number or null')
        unknown = sorted(set(obj) - {"sae", "index", "text", "author", "score"})
        if bad is None and unknown:
            bad = (unknown[0], f'unknown key "{unknown[0]}"; expected sae, index, text, author, score')
        if bad:
            problems.append(problem_at(path, bad[1], line_no, _col(line, bad[0])))
            continue
        out.setdefault((sae, index), []).append(Explanation(text, author or "", None if score is None else float(score)))
    if problems:
        raise InputError(problems)
    return out
