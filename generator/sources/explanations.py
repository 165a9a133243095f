"""Explanations, in the formats of the tools that make them, each detected from its layout:

- ours: a jsonl file of {"sae", "index", "text", "author", "score"} lines;
- Neuronpedia's explanation export: jsonl (or `batch-N.jsonl.gz` files in a folder) of rows of its
  `Explanation` table: `modelId`, `layer` (the source id `LAYER-SET`), `index`, `description`,
  `explanationModelName`, `typeName`, `scoreV1`, `scoreV2`;
- EleutherAI delphi's output: a folder with `explanations/<module>_latent<N>.txt` (the explanation
  as a JSON string) and, optionally, `scores/<scorer>/<module>_latent<N>.txt` (a JSON list of scored
  examples with `correct` and `prediction`; the score is the accuracy over those with a prediction)
  and `run_config.json` (its `explainer_model`). The module's layer number names the SAE.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sae_atlas.errors import InputError, Problem, problem_at
from sae_atlas.sources.neuronpedia import json_objects

FORMATS = ("atlas", "neuronpedia", "delphi")
_LATENT = re.compile(r"(.+)_latent(\d+)\.(txt|json)")
_BATCH = re.compile(r"batch-(\d+)\.jsonl(\.gz)?")


@dataclass(frozen=True)
class Explanation:
    text: str  # markdown (sanitized at render time)
    author: str = ""
    score: float | None = None
    # Named scores (e.g. delphi's detection and fuzz accuracy), shown next to the text.
    scores: tuple[tuple[str, float], ...] = ()


def _col(line: str, key: str) -> int:
    """1-based column of `"key"` in the raw line (1 when absent)."""
    i = line.find(f'"{key}"')
    return i + 1 if i >= 0 else 1


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_text(path: Path, expected: str) -> str:
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise InputError([problem_at(path, f"cannot read explanations ({e}); expected {expected}")]) from e


def _json_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str, dict]]:
    return list(json_objects(path, _read_text(path, "a UTF-8 jsonl file"), problems))


def detect_format(path: Path) -> str:
    """`atlas`, `neuronpedia` or `delphi`, from the layout (a folder) or the first object's keys."""
    path = Path(path)
    if path.is_dir():
        if (path / "explanations").is_dir() or any(_LATENT.fullmatch(p.name) for p in path.iterdir()):
            return "delphi"
        return "neuronpedia"
    for line in _read_text(path, "a UTF-8 jsonl file").split("\n"):
        if line.strip():
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(first, dict) and "description" in first and "sae" not in first:
                return "neuronpedia"
            break
    return "atlas"


def load_explanations(path: Path, saes: Sequence = ()) -> dict[tuple[str, int], list[Explanation]]:
    """(sae id, feature index) -> explanations in file order. Every bad line is reported at once.
    `saes` (the release's SaeSpecs) names the SAE of a delphi module by its layer."""
    path = Path(path)
    fmt = detect_format(path)
    problems: list[Problem] = []
    if fmt == "delphi":
        out = _load_delphi(path, saes, problems)
    elif fmt == "neuronpedia":
        out = _load_neuronpedia(path, problems)
    else:
        out = _load_atlas(path, problems)
    if problems:
        raise InputError(problems)
    return out


def _load_atlas(path: Path, problems: list[Problem]) -> dict[tuple[str, int], list[Explanation]]:
    out: dict[tuple[str, int], list[Explanation]] = {}
    for line_no, line, obj in _json_lines(path, problems):
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
        elif score is not None and not _number(score):
            bad = ("score", '"score" is not a number; expected a number or null')
        unknown = sorted(set(obj) - {"sae", "index", "text", "author", "score"})
        if bad is None and unknown:
            bad = (unknown[0], f'unknown key "{unknown[0]}"; expected sae, index, text, author, score')
        if bad:
            problems.append(problem_at(path, bad[1], line_no, _col(line, bad[0])))
            continue
        out.setdefault((sae, index), []).append(Explanation(text, author or "", None if score is None else float(score)))
    return out


def _load_neuronpedia(path: Path, problems: list[Problem]) -> dict[tuple[str, int], list[Explanation]]:
    if path.is_dir():
        found = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _BATCH.fullmatch(p.name)))
        files = [p for _, p in found]
        if not files:
            problems.append(problem_at(path, "no batch-N.jsonl.gz files; expected Neuronpedia's explanations folder or delphi's output"))
    else:
        files = [path]
    out: dict[tuple[str, int], list[Explanation]] = {}
    for f in files:
        for line_no, line, obj in _json_lines(f, problems):
            model, layer, index, text = obj.get("modelId"), obj.get("layer"), obj.get("index"), obj.get("description")
            bad = None
            if not isinstance(model, str):
                bad = ("modelId", 'missing or non-string "modelId"; expected the model id')
            elif not isinstance(layer, str) or not re.fullmatch(r"\d+-[a-z0-9][a-z0-9_-]*", layer):
                bad = ("layer", 'missing or invalid "layer"; expected a source id LAYER-SET, e.g. "6-res-jb"')
            elif not (isinstance(index, str) and index.isdigit() or isinstance(index, int) and not isinstance(index, bool) and index >= 0):
                bad = ("index", 'missing or invalid "index"; expected a feature index such as "12"')
            elif not isinstance(text, str):
                bad = ("description", 'missing or non-string "description"; expected the explanation text')
            else:
                for key in ("scoreV1", "scoreV2"):
                    if obj.get(key) is not None and not _number(obj[key]):
                        bad = (key, f'"{key}" is not a number; expected a number or null')
                for key in ("explanationModelName", "typeName"):
                    if obj.get(key) is not None and not isinstance(obj[key], str):
                        bad = (key, f'"{key}" is not a string; expected a name or null')
            if bad:
                problems.append(problem_at(f, bad[1], line_no, _col(line, bad[0])))
                continue
            out.setdefault((f"{model}@{layer}", int(index)), []).append(neuronpedia_explanation(obj))
    return out


def neuronpedia_explanation(row: dict) -> Explanation:
    """A checked Neuronpedia explanation row: its explainer model and type as the author, its
    non-zero `scoreV1`/`scoreV2` as the scores."""
    scores = tuple((k, float(row[k])) for k in ("scoreV1", "scoreV2") if _number(row.get(k)) and row[k])
    author = " · ".join(str(row[k]) for k in ("explanationModelName", "typeName") if isinstance(row.get(k), str) and row[k])
    return Explanation(row["description"], author, scores[-1][1] if scores else None, scores)


def _delphi_sae(module: str, saes: Sequence) -> str | None:
    """The SAE id of a delphi module name (`layers.5`, `model.layers.5.mlp`...): the release's one
    SAE on that layer, else None."""
    layers = re.findall(r"\d+", module)
    if not layers:
        return None
    on_layer = [s.id for s in saes if s.layer == int(layers[-1])]
    return on_layer[0] if len(on_layer) == 1 else None


def _delphi_accuracy(path: Path, problems: list[Problem]) -> float | None:
    text = _read_text(path, "delphi's scores: a JSON list of examples")
    try:
        examples = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(problem_at(path, f"invalid JSON ({e.msg}); expected a JSON list of scored examples", e.lineno, e.colno))
        return None
    if not isinstance(examples, list) or not all(isinstance(x, dict) for x in examples):
        problems.append(problem_at(path, 'not a list of objects; expected a JSON list of {"correct", "prediction", ...}'))
        return None
    judged = [x for x in examples if x.get("prediction") is not None]
    for x in judged:
        if not isinstance(x.get("correct"), bool):
            problems.append(problem_at(path, f'an example has "correct" {x.get("correct")!r}; expected true or false'))
            return None
    return sum(x["correct"] for x in judged) / len(judged) if judged else None


def _load_delphi(path: Path, saes: Sequence, problems: list[Problem]) -> dict[tuple[str, int], list[Explanation]]:
    folder = path / "explanations" if (path / "explanations").is_dir() else path
    root = path if folder != path else path.parent
    author = "delphi"
    config = root / "run_config.json"
    if config.is_file():
        try:
            model = json.loads(_read_text(config, "a JSON object")).get("explainer_model")
            author = f"delphi · {model}" if isinstance(model, str) and model else author
        except (json.JSONDecodeError, AttributeError):
            pass
    scorers = sorted(p for p in (root / "scores").iterdir() if p.is_dir()) if (root / "scores").is_dir() else []
    out: dict[tuple[str, int], list[Explanation]] = {}
    for f in sorted(folder.iterdir(), key=lambda p: p.name):
        m = _LATENT.fullmatch(f.name)
        if m is None:
            continue
        text = _read_text(f, "a JSON string")
        try:
            explanation = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(problem_at(f, f"invalid JSON ({e.msg}); expected the explanation as a JSON string", e.lineno, e.colno))
            continue
        if not isinstance(explanation, str):
            problems.append(problem_at(f, f"holds {type(explanation).__name__}; expected the explanation as a JSON string"))
            continue
        sae = _delphi_sae(m.group(1), saes)
        if sae is None:
            problems.append(problem_at(f, f"module '{m.group(1)}' names no single SAE of this release by its layer; expected a module such as layers.L with one SAE on layer L"))
            continue
        scores = []
        for scorer in scorers:
            score_file = scorer / f.name
            if score_file.is_file():
                accuracy = _delphi_accuracy(score_file, problems)
                if accuracy is not None:
                    scores.append((scorer.name, accuracy))
        out.setdefault((sae, int(m.group(2))), []).append(
            Explanation(explanation, author, scores[0][1] if scores else None, tuple(scores))
        )
    if not out and not problems:
        problems.append(problem_at(folder, "no <module>_latent<N>.txt files; expected delphi's explanations folder"))
    return out
