"""The public Python API (`import sae_atlas`): light to import, the CLI's dataclasses and errors,
and a build that writes exactly the site `sae-atlas build` writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sae_atlas
from sae_atlas import AtlasError, BuildReport, InputError, Release
from tests.conftest import ROOT, sae_atlas as cli
from tests.fixtures import build_fixture_content

# One Set on both layers, 12 features per SAE (below UMAP's minimum, so the CLI maps with PCA too).
TINY_SETS = (("res-st", "blocks.{layer}.hook_resid_post", "standard", (0, 1)),)
TINY_SAES = ["tiny-2l@0-res-st", "tiny-2l@1-res-st"]


@pytest.fixture(scope="module")
def tiny_content(tmp_path_factory) -> Path:
    return build_fixture_content(tmp_path_factory.mktemp("api"), n_prompts=8, context=12, d_sae=12, sets=TINY_SETS)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""})


def test_import_does_not_import_torch():
    done = _python(
        "import sys, sae_atlas\n"
        "from sae_atlas import load_release, load_content, check, build, render, BuildReport, RenderReport, InputError\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformer_lens', 'sae_lens', 'umap'))\n"
        "assert not heavy, heavy\n"
        "assert callable(sae_atlas.render) and callable(sae_atlas.check)\n"
    )
    assert done.returncode == 0, done.stderr


def test_compute_and_render_are_callable_and_still_subpackages():
    import sae_atlas.compute as compute_package
    from sae_atlas.compute import ComputeOptions
    from sae_atlas.render import RenderReport

    assert sae_atlas.compute is compute_package and callable(sae_atlas.compute)
    assert ComputeOptions is sae_atlas.compute.options.ComputeOptions
    assert callable(sae_atlas.render) and sae_atlas.render.RenderReport is RenderReport
    assert "compute" in dir(sae_atlas) and "load_release" in dir(sae_atlas)
    with pytest.raises(AttributeError):
        sae_atlas.no_such_name


def test_load_release_and_check(tiny_content):
    manifest = tiny_content / "releases" / "tiny-demo.yaml"
    release = sae_atlas.load_release(manifest)
    assert isinstance(release, Release) and release.id == "tiny-demo"
    assert [s.id for s in release.saes()] == TINY_SAES
    assert sae_atlas.load_content(tiny_content) == [release]
    assert sae_atlas.check(tiny_content) == [release]
    assert sae_atlas.check(manifest) == [release]
    assert sae_atlas.check(release) == [release]
    with pytest.raises(AtlasError, match="unknown release nope"):
        sae_atlas.load_content(tiny_content, only=["nope"])


def test_bad_input_raises_input_error_with_every_problem(tmp_path, tiny_content):
    bad = tmp_path / "content" / "releases" / "bad.yaml"
    bad.parent.mkdir(parents=True)
    text = (tiny_content / "releases" / "tiny-demo.yaml").read_text()
    bad.write_text(text.replace("prompts: 8", "prompts: -1").replace("path: ../models/tiny-2l", "path: ../models/missing"))
    for call in (lambda: sae_atlas.load_release(bad), lambda: sae_atlas.check(bad.parents[1]), lambda: sae_atlas.compute(bad, cache=tmp_path / "c")):
        with pytest.raises(InputError) as caught:
            call()
        messages = [str(p) for p in caught.value.problems]
        assert any("corpus.prompts" in m for m in messages) and all(m.startswith(str(bad) + ":") for m in messages), messages
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="no such directory"):
        sae_atlas.load_content(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="expected Release objects"):
        sae_atlas.check(["tiny-demo"])


def test_render_without_a_cache_is_an_atlas_error(tmp_path, tiny_content):
    with pytest.raises(AtlasError):
        sae_atlas.render(tiny_content, cache=tmp_path / "empty-cache", out=tmp_path / "site", quiet=True)
    assert not (tmp_path / "site").exists()


def test_build_writes_the_site_the_cli_writes(tmp_path, tiny_content):
    report = sae_atlas.build(tiny_content, cache=tmp_path / "api-cache", out=tmp_path / "api-site", device="cpu", pca_map=True, quiet=True)
    assert isinstance(report, BuildReport)
    assert sorted(report.compute.computed) == TINY_SAES and report.compute.cached == []
    assert report.render.out == tmp_path / "api-site" and report.render.features == 2 * 12
    site = _files(tmp_path / "api-site")
    assert "index.html" in site and report.render.files == len(site)

    run = cli("build", "--content", tiny_content, "--cache", tmp_path / "cli-cache", "--out", tmp_path / "cli-site", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.output
    cli_site = _files(tmp_path / "cli-site")
    assert sorted(site) == sorted(cli_site)
    assert [name for name in site if site[name] != cli_site[name]] == []

    # A second compute finds every SAE cached; render alone rewrites the same site.
    again = sae_atlas.compute(tiny_content, cache=tmp_path / "api-cache", device="cpu", pca_map=True, quiet=True)
    assert again.computed == [] and sorted(again.cached) == TINY_SAES
    rendered = sae_atlas.render(sae_atlas.load_content(tiny_content), cache=tmp_path / "api-cache", out=tmp_path / "again", quiet=True)
    assert rendered.files == len(site) and _files(tmp_path / "again") == site
