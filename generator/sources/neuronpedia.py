"""Neuronpedia's public export layout, read without torch.

Per SAE, `{modelId}/{sourceId}/` holds `release.jsonl`, `model.jsonl`, `sourceset.jsonl`,
`source.jsonl`, `features/batch-N.jsonl.gz` (rows of its `Neuron` table), `activations/batch-N.jsonl.gz`
(rows of `Activation`), `explanations/batch-N.jsonl.gz` (rows of `Explanation`) and
`skipped_indexes.json` (features without rows: dead ones). `sourceId` is `{layer}-{setName}`.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sae_atlas.errors import InputError, Problem, problem_at

SOURCE_ID = re.compile(r"(\d+)-([a-z0-9][a-z0-9_-]*)", re.IGNORECASE)
_BATCH = re.compile(r"batch-(\d+)\.jsonl(\.gz)?")


@dataclass(frozen=True)
class ExportSae:
    """One SAE's folder of an export."""

    model_id: str
    source_id: str
    layer: int
    set_name: str
    path: Path


def find_saes(root: Path) -> list[ExportSae]:
    """The SAE folders under `root`: `root` itself, `root/{sourceId}` or `root/{modelId}/{sourceId}`
    (a folder is an SAE's when it has `features/`), sorted by (model, layer, set)."""
    root = Path(root)
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    candidates += [q for p in candidates[1:] for q in sorted(p.iterdir()) if q.is_dir()]
    out = []
    for p in candidates:
        if not (p / "features").is_dir():
            continue
        m = SOURCE_ID.fullmatch(p.name)
        if m is None:
            continue
        out.append(ExportSae(p.parent.name, p.name, int(m.group(1)), m.group(2), p))
    return sorted(out, key=lambda s: (s.model_id, s.layer, s.set_name))


def batch_files(folder: Path) -> list[Path]:
    """`batch-N.jsonl.gz` (or `.jsonl`) files of a folder in numeric order; [] when it is absent."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _BATCH.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def read_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str, dict]]:
    """(line number, raw line, object) of each JSON line of a (gzipped) jsonl file; bad lines and an
    unreadable file are added to `problems` at their line and column."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as e:
        problems.append(problem_at(path, f"cannot read ({e}); expected a gzip-compressed UTF-8 jsonl file"))
        return
    yield from json_objects(path, text, problems)


def json_objects(path: Path, text: str, problems: list[Problem]) -> Iterator[tuple[int, str, dict]]:
    """(line number, raw line, object) of each non-blank line of jsonl `text` read from `path`; a line
    that is not a JSON object is added to `problems` at its line and column. Lines end at "\n" only
    (splitlines() would also break inside strings at U+2028, U+0085...)."""
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(problem_at(path, f"invalid JSON ({e.msg}); expected one object per line", line_no, e.colno))
            continue
        if not isinstance(obj, dict):
            problems.append(problem_at(path, "not an object; expected one JSON object per line", line_no, 1))
            continue
        yield line_no, line, obj


def first_row(path: Path, problems: list[Problem]) -> dict:
    """The first object of a small jsonl file (`source.jsonl`...), {} when the file is absent."""
    if not path.is_file():
        return {}
    return next((obj for _, _, obj in read_rows(path, problems)), {})


def column(line: str, key: str) -> int:
    """1-based column of `"key"` in the raw line (1 when absent)."""
    i = line.find(f'"{key}"')
    return i + 1 if i >= 0 else 1


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Field -> (check, what is expected). Required fields must be present; optional ones may be null.
def _str(v: object) -> bool:
    return isinstance(v, str)


def _index(v: object) -> bool:
    return isinstance(v, str) and v.isdigit() or isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _numbers(v: object) -> bool:
    return isinstance(v, list) and all(is_number(x) for x in v)


def _strings(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _ints(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


NUMBER = (is_number, "a number")
NUMBERS = (_numbers, "a list of numbers")
STRINGS = (_strings, "a list of strings")
INTS = (_ints, "a list of integers")
INDEX = (_index, 'a feature index such as "12"')
TEXT = (_str, "a string")

FEATURE_REQUIRED = {"modelId": TEXT, "layer": TEXT, "index": INDEX, "maxActApprox": NUMBER, "frac_nonzero": NUMBER}
FEATURE_OPTIONAL = {
    "pos_str": STRINGS, "pos_values": NUMBERS, "neg_str": STRINGS, "neg_values": NUMBERS,
    "topkCosSimIndices": INTS, "topkCosSimValues": NUMBERS,
    "hookName": TEXT, "umap_x": NUMBER, "umap_y": NUMBER, "umap_cluster": (_int, "an integer"), "umap_log_feature_sparsity": NUMBER,
    "correlated_features_indices": INTS, "correlated_features_pearson": NUMBERS,
    "correlated_neurons_indices": INTS, "correlated_neurons_pearson": NUMBERS,
    "neuron_alignment_indices": INTS, "neuron_alignment_values": NUMBERS, "neuron_alignment_l1": NUMBERS,
}
ACTIVATION_REQUIRED = {
    "modelId": TEXT, "layer": TEXT, "index": INDEX, "tokens": STRINGS, "values": NUMBERS,
    "maxValue": NUMBER, "maxValueTokenIndex": (_int, "a token index"),
}
ACTIVATION_OPTIONAL = {
    "minValue": NUMBER, "binMin": NUMBER, "binMax": NUMBER, "binContains": NUMBER,
    "qualifyingTokenIndex": (_int, "a token index"), "dfaValues": NUMBERS, "dfaTargetIndex": (_int, "a token index"),
}
# Pairs that must have equal lengths.
FEATURE_PAIRS = (
    ("pos_str", "pos_values"), ("neg_str", "neg_values"), ("topkCosSimIndices", "topkCosSimValues"),
    ("correlated_features_indices", "correlated_features_pearson"), ("correlated_neurons_indices", "correlated_neurons_pearson"),
    ("neuron_alignment_indices", "neuron_alignment_values"),
)


def check_row(obj: dict, line: str, required: dict, optional: dict, what: str) -> tuple[int, str] | None:
    """(column, message) of the first field of a row that is missing or of the wrong type, else None."""
    for key, (ok, expected) in required.items():
        if key not in obj or obj[key] is None:
            return 1, f'{what} row lacks "{key}"; expected {expected}'
        if not ok(obj[key]):
            return column(line, key), f'"{key}" is {type(obj[key]).__name__}; expected {expected}'
    for key, (ok, expected) in optional.items():
        if obj.get(key) is not None and not ok(obj[key]):
            return column(line, key), f'"{key}" is {type(obj[key]).__name__}; expected {expected} or null'
    return None


def load_skipped(path: Path, problems: list[Problem]) -> list[int]:
    """`skipped_indexes.json`: a list of indexes, or an object with a `skipped_indexes` list."""
    if not path.is_file():
        return []
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        problems.append(problem_at(path, f"cannot read ({e}); expected a JSON list of feature indexes"))
        return []
    except json.JSONDecodeError as e:
        problems.append(problem_at(path, f"invalid JSON ({e.msg}); expected a JSON list of feature indexes", e.lineno, e.colno))
        return []
    if isinstance(obj, dict):
        obj = obj.get("skipped_indexes")
    if not isinstance(obj, list) or not all(_index(x) for x in obj):
        problems.append(problem_at(path, "not a list of feature indexes; expected e.g. [3, 17]"))
        return []
    return sorted({int(x) for x in obj})


def fail_if(problems: list[Problem]) -> None:
    if problems:
        raise InputError(problems)
