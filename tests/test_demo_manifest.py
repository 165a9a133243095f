"""The demo release shipped in content/ is valid: `sae-atlas check` accepts it, what it names agrees
with the files (read here, not through the generator), and check is not vacuous on it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, sae_atlas

CONTENT = ROOT / "content"
POSITIONED = re.compile(r"^\S+\.yaml:\d+:\d+: .+", re.M)


def _manifests() -> list[tuple[Path, dict]]:
    paths = sorted((CONTENT / "releases").glob("*.yaml"))
    assert paths, "no release manifest in content/releases"
    return [(p, yaml.safe_load(p.read_text(encoding="utf-8"))) for p in paths]


def test_check_accepts_the_shipped_content():
    run = sae_atlas("check", "--content", CONTENT)
    assert run.returncode == 0, run.output
    n_saes = sum(len(s["saes"]) for _, m in _manifests() for s in m["sets"])
    assert f"ok: {len(_manifests())} release(s), {n_saes} SAE(s)" in run.output
    assert "Traceback" not in run.output


@pytest.mark.parametrize("path, manifest", _manifests(), ids=lambda x: x.name if isinstance(x, Path) else "")
def test_every_sae_of_the_demo_reads_the_hook_and_width_the_manifest_names(path, manifest):
    model_dir = (path.parent / manifest["model"]["path"]).resolve()
    model = json.loads((model_dir / "config.json").read_text())
    widths = {"hook_resid_post": model["d_model"], "hook_mlp_out": model["d_model"], "hook_resid_pre": model["d_model"],
              "mlp.hook_post": model["d_mlp"], "attn.hook_z": model["n_heads"] * model["d_head"]}
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    d_sae = {}
    for s in manifest["sets"]:
        for e in s["saes"]:
            hook = s["hook"].format(layer=e["layer"])
            directory = (path.parent / e["path"]).resolve()
            cfg = json.loads((directory / "cfg.json").read_text())
            assert (directory / "sae_weights.safetensors").is_file(), directory
            assert 0 <= e["layer"] < model["n_layers"], hook
            assert cfg["metadata"]["hook_name"] == hook, directory
            assert cfg["d_in"] == widths[hook.split(".", 2)[2]], hook
            d_sae[f"{manifest['model']['id']}@{e['layer']}-{s['id']}"] = cfg["d_sae"]
    corpus = (path.parent / manifest["corpus"]["path"]).resolve()
    assert corpus.is_file() and corpus.stat().st_size > 0
    assert manifest["corpus"]["context"] <= model["n_ctx"]
    if manifest.get("explanations"):
        lines = (path.parent / manifest["explanations"]).resolve().read_text(encoding="utf-8").splitlines()
        for line in filter(str.strip, lines):
            x = json.loads(line)
            assert x["sae"] in d_sae and 0 <= x["index"] < d_sae[x["sae"]], x


def _copy_content(tmp_path: Path) -> Path:
    """content/ without its large files copied: the demo's model, SAEs and corpus are linked."""
    content = tmp_path / "content"
    shutil.copytree(CONTENT / "releases", content / "releases")
    shutil.copytree(CONTENT / "explanations", content / "explanations")
    (content / "demo").symlink_to(CONTENT / "demo", target_is_directory=True)
    return content


def test_check_rejects_the_demo_with_a_wrong_hook_or_layer(tmp_path):
    content = _copy_content(tmp_path)
    (manifest_path,) = (content / "releases").glob("*.yaml")
    assert sae_atlas("check", "--content", content).returncode == 0  # the copy itself is fine
    text = manifest_path.read_text(encoding="utf-8")
    broken = text.replace("hook: blocks.{layer}.hook_mlp_out", "hook: blocks.{layer}.mlp.hook_post", 1)
    broken = broken.replace("{layer: 1, path: ../demo/saes/res/1}", "{layer: 2, path: ../demo/saes/res/1}", 1)
    assert broken.count("mlp.hook_post") == 1 and "layer: 2" in broken
    manifest_path.write_text(broken, encoding="utf-8")
    run = sae_atlas("check", "--content", content)
    assert run.returncode == 2, run.output
    assert "Traceback" not in run.output
    lines = POSITIONED.findall(run.stderr)
    layer_line = 1 + broken.splitlines().index(next(x for x in broken.splitlines() if "{layer: 2," in x))
    assert any(f".yaml:{layer_line}:" in x and "layer 2" in x for x in lines), run.stderr
    assert any("blocks.0.hook_mlp_out" in x and "blocks.0.mlp.hook_post" in x for x in lines), run.stderr
