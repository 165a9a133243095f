"""`sae-atlas new DIR`: the scaffold's files, its refusals (never overwriting), and that its example
manifest passes `check` and builds once the model, SAE and corpus it names exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sae_atlas.new import MANIFEST, SCAFFOLD_FILES
from tests.conftest import sae_atlas
from tests.fixtures import fixture_text, make_corpus, make_model_dir, make_sae_dir

WORKFLOW = Path(".github/workflows/pages.yml")


def test_new_writes_the_scaffold_into_a_missing_dir(tmp_path):
    run = sae_atlas("new", "project", cwd=tmp_path)
    assert run.returncode == 0, run.output
    root = tmp_path / "project"
    written = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert written == sorted(SCAFFOLD_FILES)
    for rel in SCAFFOLD_FILES:
        assert f"wrote {Path('project') / rel}" in run.stderr
    for command in ("cd project", "sae-atlas check", "sae-atlas build", "sae-atlas serve", "sae-atlas deploy"):
        assert command in run.stderr
    readme = (root / "README.md").read_text()
    for command in ("sae-atlas check", "sae-atlas build", "sae-atlas serve", "sae-atlas deploy", str(MANIFEST)):
        assert command in readme
    gitignore = (root / ".gitignore").read_text().split()
    assert "build/" in gitignore and ".venv/" in gitignore


def test_new_into_an_existing_repository_keeps_its_files(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "notes.md").write_text("mine\n")
    run = sae_atlas("new", ".", cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert (tmp_path / "notes.md").read_text() == "mine\n"
    assert (tmp_path / MANIFEST).is_file()
    assert "cd ." not in run.stderr


@pytest.mark.parametrize("existing", [str(p) for p in SCAFFOLD_FILES])
def test_new_refuses_when_a_scaffold_file_exists(tmp_path, existing):
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("the user's own\n")
    before = sorted(p for p in tmp_path.rglob("*"))
    run = sae_atlas("new", tmp_path, cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and existing in lines[0] and "nothing was written" in lines[0], run.stderr
    assert "Traceback" not in run.output
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert (tmp_path / existing).read_text() == "the user's own\n"


def test_new_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "a-file").write_text("x")
    run = sae_atlas("new", "a-file", cwd=tmp_path)
    assert run.returncode == 2 and "is a file" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / ".github").write_text("not a folder")
    run = sae_atlas("new", "repo", cwd=tmp_path)
    assert run.returncode == 2 and ".github" in run.stderr, run.output
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".github"]


def test_workflow_offers_compute_in_ci_and_render_from_a_cache(tmp_path):
    assert sae_atlas("new", tmp_path).returncode == 0
    text = (tmp_path / WORKFLOW).read_text()
    workflow = yaml.safe_load(text)
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["workflow_dispatch"]["inputs"]["mode"]["options"] == ["compute", "render"]
    assert "vars.ATLAS_MODE" in workflow["env"]["ATLAS_MODE"]
    assert workflow["env"]["TORCH_INDEX_URL"] == "${{ vars.TORCH_INDEX_URL }}"  # the CPU index, a repository variable
    steps = workflow["jobs"]["build"]["steps"]
    runs = {s.get("if"): [] for s in steps}
    for s in steps:
        runs[s.get("if")].append(s.get("run", "") + s.get("uses", ""))
    compute, render = "\n".join(runs["env.ATLAS_MODE == 'compute'"]), "\n".join(runs["env.ATLAS_MODE == 'render'"])
    assert '--index-url "$TORCH_INDEX_URL"' in compute and '"$SAE_ATLAS[compute]"' in compute and "sae-atlas build" in compute
    assert "torch" not in render and "[compute]" not in render
    assert "build/cache" in render and "sae-atlas render" in render
    uses = [s.get("uses", "") for s in steps] + [s.get("uses", "") for s in workflow["jobs"]["deploy"]["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)


def test_the_example_manifest_checks_and_builds_once_its_paths_exist(tmp_path):
    assert sae_atlas("new", tmp_path).returncode == 0
    manifest = yaml.safe_load((tmp_path / MANIFEST).read_text())
    releases = tmp_path / MANIFEST.parent
    # Before: the manifest names files that do not exist yet; check says which, at their lines.
    before = sae_atlas("check", cwd=tmp_path)
    assert before.returncode == 2 and f"{MANIFEST}:" in before.stderr, before.output
    # Fill the paths it names with a small model, SAE and corpus.
    corpus = manifest["corpus"]
    text = fixture_text(n_docs=3000)
    model, _ = make_model_dir(releases / manifest["model"]["path"], text, n_ctx=corpus["context"])
    (res,) = manifest["sets"]
    (sae,) = res["saes"]
    hook = res["hook"].format(layer=sae["layer"])
    make_sae_dir(releases / sae["path"], model.cfg.d_model, 12, "standard", hook)
    make_corpus(releases / corpus["path"], text=text)
    after = sae_atlas("check", cwd=tmp_path)
    assert after.returncode == 0, after.output
    assert "ok: 1 release(s), 1 SAE(s)" in after.stderr
    # And the project builds with the commands its README gives, from its own folder.
    built = sae_atlas("build", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert built.returncode == 0, built.output
    assert (tmp_path / "build/site/index.html").is_file()
    assert (tmp_path / f"build/site/{manifest['model']['id']}/{sae['layer']}-{res['id']}/index.html").is_file()


def _uncommented(text: str, key: str) -> str:
    """The commented-out `key:` block of the example manifest, uncommented (its lines up to the next
    blank line)."""
    lines = text.splitlines()
    start = lines.index(f"# {key}:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    return "\n".join(block)


def test_the_example_manifest_shows_every_compute_setting_with_its_default():
    import dataclasses

    from sae_atlas.manifest import ComputeSettings
    from sae_atlas.new import EXAMPLE_MANIFEST

    shown = yaml.safe_load(_uncommented(EXAMPLE_MANIFEST, "compute"))["compute"]
    defaults = {f.name: f.default for f in dataclasses.fields(ComputeSettings)}
    assert shown.keys() == defaults.keys()
    assert {k: str(v).lower() for k, v in shown.items()} == {k: str(v).lower() for k, v in defaults.items()}


def test_the_example_manifest_commented_settings_and_list_pass_check(tmp_path):
    """Uncommenting the example's `compute:` and `lists:` blocks gives a manifest that `check` accepts."""
    from sae_atlas.new import EXAMPLE_MANIFEST

    assert sae_atlas("new", tmp_path).returncode == 0
    path = tmp_path / MANIFEST
    manifest = yaml.safe_load(path.read_text())
    releases = path.parent
    text = fixture_text(n_docs=3000)
    model, _ = make_model_dir(releases / manifest["model"]["path"], text, n_ctx=manifest["corpus"]["context"])
    (res,) = manifest["sets"]
    make_sae_dir(releases / res["saes"][0]["path"], model.cfg.d_model, 32, "standard", res["hook"].format(layer=res["saes"][0]["layer"]))
    make_corpus(releases / manifest["corpus"]["path"], text=text)
    path.write_text(EXAMPLE_MANIFEST + "\n" + _uncommented(EXAMPLE_MANIFEST, "compute") + "\n"
                    + _uncommented(EXAMPLE_MANIFEST, "lists") + "\n")
    checked = sae_atlas("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.output
