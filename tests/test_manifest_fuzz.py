"""Mutated manifests either load or fail with positioned problems; never with a traceback."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sae_atlas.cli import main
from sae_atlas.errors import InputError
from sae_atlas.manifest import load_release
from tests.test_manifest import VALID, _content

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["{layer}", "{}", "{x}", "../models/tiny", "blocks.{layer}.hook_z", "Bad Id", "~", "", "null", "yes"]),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(data: object, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into a nested structure of dicts and lists."""
    found = []
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return found
    for key, value in items:
        found.append(prefix + (key,))
        found.extend(_paths(value, prefix + (key,)))
    return found


def _parent(data: object, path: tuple) -> object:
    for key in path[:-1]:
        data = data[key]  # type: ignore[index]
    return data


@st.composite
def mutated_manifests(draw) -> str:
    kind = draw(st.sampled_from(["delete", "retype", "junk_key", "truncate", "insert_text", "combined"]))
    if kind == "truncate":
        return VALID[: draw(st.integers(0, len(VALID)))]
    if kind == "insert_text":
        at = draw(st.integers(0, len(VALID)))
        junk = draw(st.text(alphabet=st.sampled_from(list(":-[]{}#&*!|>'\"%@` \n\t,?xy0")), min_size=1, max_size=6))
        return VALID[:at] + junk + VALID[at:]
    data = yaml.safe_load(VALID)
    for _ in range(draw(st.integers(1, 4)) if kind == "combined" else 1):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["delete", "retype", "junk_key"])) if kind == "combined" else kind
        if action == "delete":
            del parent[path[-1]]  # type: ignore[index, union-attr]
        elif action == "retype":
            parent[path[-1]] = copy.deepcopy(draw(VALUES))  # type: ignore[index]
        else:
            target = parent if isinstance(parent, dict) else data
            target[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)  # type: ignore[index]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _write(root: Path, text: str) -> Path:
    path = _content(root) / "releases" / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@SETTINGS
@given(text=mutated_manifests())
def test_mutated_manifest_loads_or_reports_positioned_problems(tmp_path_factory, text):
    path = _write(tmp_path_factory.getbasetemp() / "fuzz", text)
    try:
        load_release(path)
    except InputError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.file == str(path)
            assert problem.line >= 1 and problem.col >= 1
            assert problem.message.strip()
            assert "; " in problem.message  # what is wrong; what is expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated_manifests())
def test_check_command_on_mutated_manifests_exits_0_or_2(tmp_path_factory, text):
    root = tmp_path_factory.getbasetemp() / "fuzz-cli"
    path = _write(root, text)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["check", "--content", str(path.parent.parent)])
    err = stderr.getvalue()
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert "nothing was written" in err
