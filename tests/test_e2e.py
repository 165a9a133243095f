"""End to end, as a new user meets the product: `sae-atlas build` on a small release, then the site
on disk is checked against the URL contract, its links, its data files, and a brute-force
recomputation of the top activations done here with TransformerLens and SAELens directly."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import orjson
import pytest
import yaml

from tests import packed
from tests.conftest import ROOT, BuiltSite, sae_atlas
from tests.fixtures import load_reference_model, load_reference_sae, residual_directions

DUMP_KEYS = {
    "sae", "index", "max_activation", "density", "top_examples", "interval_examples", "histogram",
    "positive_logits", "negative_logits", "neighbours", "umap", "logit_histogram", "correlated_features",
    "correlated_neurons", "aligned_neurons",
}
EXAMPLE_KEYS = {"prompt", "position", "activation", "tokens", "token_strings", "activations"}
SUMMARY_KEYS = {
    "sae", "d_sae", "shard_size", "corpus", "prompts_per_shard", "context_before", "context_after",
    "max", "density", "x", "y", "cluster", "label", "expl", "peak_tokens", "layers", "text_context",
}
RECORD_KEYS = {
    "i", "max", "density", "hist", "pos", "neg", "nb", "xnb", "top", "intervals", "expl", "lh", "cf", "cn", "al",
    "tt",  # the top examples' text, absent for a feature without any
}
# What SAEs reading attn.hook_z add: direct feature attribution per top example (loss effects are
# off on a CPU by default).
HOOK_Z_RECORD_KEYS, HOOK_Z_EXAMPLE_KEYS = {"dfa", "dfa_s"}, {"dfa"}
SHARD_REL = 6e-4  # shard numbers carry 4 significant digits
EXACT_REL = 1e-4


# --- reading the release and the site, independently of the generator ---------------------------


@dataclasses.dataclass(frozen=True)
class Sae:
    id: str  # MODEL@LAYER-SET
    model: str
    set: str
    layer: int
    hook: str
    path: Path

    @property
    def url(self) -> str:
        return f"{self.model}/{self.layer}-{self.set}/index.html"


def _manifest(content: Path) -> tuple[Path, dict]:
    (path,) = sorted((content / "releases").glob("*.yaml"))
    return path, yaml.safe_load(path.read_text(encoding="utf-8"))


def _saes(content: Path) -> list[Sae]:
    path, m = _manifest(content)
    model = m["model"]["id"]
    return [
        Sae(f"{model}@{e['layer']}-{s['id']}", model, s["id"], e["layer"], s["hook"].format(layer=e["layer"]),
            (path.parent / e["path"]).resolve())
        for s in m["sets"]
        for e in s["saes"]
    ]


def data_call(path: Path) -> tuple[str, list]:
    """(registrar name, JSON arguments) of a classic-script data file `AtlasData.name(args);`."""
    text = path.read_bytes()
    assert text.startswith(b"AtlasData.") and text.rstrip().endswith(b");"), f"{path}: not an AtlasData call"
    open_paren = text.index(b"(")
    return text[len(b"AtlasData."):open_paren].decode(), orjson.loads(b"[" + text[open_paren + 1:text.rstrip().rindex(b")")] + b"]")


def _summary(site: Path, sae: Sae) -> dict:
    name, (summary,) = data_call(site / sae.url.replace("index.html", "data/summary.js"))
    assert name == "summary"
    return summary


def _record(site: Path, sae: Sae, index: int) -> dict:
    summary = _summary(site, sae)
    shard = index // summary["shard_size"]
    name, (number, records) = data_call(site / sae.url.replace("index.html", f"data/f/{shard:04d}.js"))
    assert name == "features" and number == shard
    (record,) = [r for r in records if r["i"] == index]
    return record


def _all_records(site: Path, sae: Sae) -> dict[int, dict]:
    """Every feature record of an SAE, by index, each shard read once."""
    records = {}
    for shard in sorted((site / sae.url).parent.glob("data/f/*.js")):
        records.update({r["i"]: r for r in data_call(shard)[1][1]})
    return records


class _Links(HTMLParser):
    ATTRIBUTES = {"href", "src", "data-summary"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in self.ATTRIBUTES:
                self.links.append((tag, name, value or ""))


def _resolve(site: Path, page: Path, href: str) -> Path | None:
    """The file a page-relative link names, or None when it leaves the site."""
    target = (page.parent / unquote(urlsplit(href).path)).resolve()
    return target if site.resolve() in target.parents else None


# --- the brute-force reference --------------------------------------------------------------------


@dataclasses.dataclass
class Reference:
    tokens: np.ndarray  # int [prompts, context]
    acts: dict[str, np.ndarray]  # SAE id -> float32 [prompts, context, d_sae]
    model: object = None  # the HookedTransformer the activations came from
    w_dec: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # SAE id -> f32 [d_sae, d_in]
    model_dir: Path | None = None


@pytest.fixture(scope="module")
def reference(built_site: BuiltSite) -> Reference:
    """Every SAE's activations on every corpus token, computed here in one batch."""
    import torch

    path, m = _manifest(built_site.content)
    saes = _saes(built_site.content)
    key = _summary(built_site.site, saes[0])["corpus"].rstrip("/").rsplit("/", 1)[-1]
    tokens = np.load(built_site.cache / "corpus" / key / "tokens.npy")
    assert tokens.shape == (m["corpus"]["prompts"], m["corpus"]["context"])
    model_dir = (path.parent / m["model"]["path"]).resolve()
    model = load_reference_model(model_dir)
    acts, w_dec = {}, {}
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.from_numpy(tokens.astype(np.int64)), names_filter=[s.hook for s in saes])
        for s in saes:
            sae = load_reference_sae(s.path)
            acts[s.id] = sae.encode(cache[s.hook].float()).float().numpy()
            w_dec[s.id] = sae.W_dec.detach().float().numpy()
    return Reference(tokens, acts, model, w_dec, model_dir)


def _ranked(acts: np.ndarray, feature: int) -> list[tuple[float, int, int]]:
    """(activation, prompt, position) of every firing token: highest first, then earliest prompt and position."""
    a = acts[:, :, feature]
    prompts, positions = np.nonzero(a > 0)
    order = sorted(zip((-a[prompts, positions]).tolist(), prompts.tolist(), positions.tolist()))
    return [(-v, p, q) for v, p, q in order]


# --- the build --------------------------------------------------------------------------------------


def test_build_exits_zero_and_writes_a_page_at_every_design_url(built_site):
    assert built_site.build.returncode == 0
    _, m = _manifest(built_site.content)
    model = m["model"]["id"]
    expected = {"index.html", f"{m['release']}/index.html"}
    expected |= {f"{model}/{s['id']}/index.html" for s in m["sets"]}
    expected |= {s.url for s in _saes(built_site.content)}
    expected |= {s.url.replace("index.html", "embed.html") for s in _saes(built_site.content)}
    expected |= {f"{model}/prompts.html"} | {f"{m['release']}/lists/{x['id']}.html" for x in m.get("lists", [])}
    pages = {p.relative_to(built_site.site).as_posix() for p in built_site.site.rglob("*.html")}
    assert pages == expected


def test_every_link_of_every_page_names_a_file_of_the_site(built_site):
    site = built_site.site
    _, m = _manifest(built_site.content)
    author_links = set(m.get("links", {}).values())
    problems, checked = [], 0
    for page in sorted(site.rglob("*.html")):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, attribute, value in parser.links:
            where = f"{page.relative_to(site)}: <{tag} {attribute}={value!r}>"
            parts = urlsplit(value)
            if parts.scheme or parts.netloc:
                if not (tag == "a" and value in author_links):
                    problems.append(f"{where}: absolute or external URL")
                continue
            if value.startswith("/"):
                problems.append(f"{where}: site-absolute (breaks under file:// and /repo/)")
                continue
            if parts.fragment and not parts.fragment.isdigit() and value != "#main":
                problems.append(f"{where}: fragment other than a feature index")
            if not parts.path:
                continue
            target = _resolve(site, page, value)
            if target is None:
                problems.append(f"{where}: leaves the site")
            elif not target.is_file():
                problems.append(f"{where}: no such file")
            elif tag == "a" and target.suffix != ".html":
                problems.append(f"{where}: a page link must name an .html file")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked > 40


def test_links_inside_data_files_resolve(built_site):
    """Hrefs that the front end builds from data (search results, layers, cross-layer neighbours, corpus)."""
    site = built_site.site
    _, (search,) = data_call(site / "search-index.js")
    docs = search["docs"]
    assert docs and all((site / d["href"]).is_file() for d in docs)
    for sae in _saes(built_site.content):
        page = site / sae.url
        summary = _summary(site, sae)
        assert (page.parent / summary["corpus"] / "0000.js").is_file()
        for layer in summary["layers"]:
            assert _resolve(site, page, layer["href"]).is_file(), layer
        for shard in sorted((page.parent / "data" / "f").glob("*.js")):
            for record in data_call(shard)[1][1]:
                for layer, index, _ in record["xnb"]:
                    # An index into summary.layers: another SAE of the Set, whose page exists (checked above).
                    assert 0 <= layer < len(summary["layers"]) and summary["layers"][layer]["sae"] != sae.id, (sae.id, layer)
                    assert isinstance(index, int) and index >= 0


def test_data_shards_parse_and_cover_every_feature_and_prompt(built_site):
    site = built_site.site
    _, m = _manifest(built_site.content)
    n_prompts, context = m["corpus"]["prompts"], m["corpus"]["context"]
    corpus_dirs = set()
    for sae in _saes(built_site.content):
        summary = _summary(site, sae)
        mlp_out = sae.hook == f"blocks.{sae.layer}.hook_mlp_out"  # its neuron panes list the MLP's neurons
        assert set(summary) == SUMMARY_KEYS | ({"neurons"} if mlp_out else set())
        assert summary.get("neurons") == (f"blocks.{sae.layer}.mlp.hook_post" if mlp_out else None)
        n = summary["d_sae"]
        assert summary["sae"] == sae.id
        for column in ("max", "density", "x", "y", "cluster", "label", "expl", "peak_tokens"):
            assert len(summary[column]) == n, column
        assert all(0 <= v <= 1 for v in summary["x"] + summary["y"])
        shards = sorted((site / sae.url).parent.glob("data/f/*.js"))
        assert len(shards) == math.ceil(n / summary["shard_size"])
        indices, vocab_sizes = [], set()
        for number, path in enumerate(shards):
            name, (shard, records) = data_call(path)
            assert (name, shard, path.stem) == ("features", number, f"{number:04d}")
            for r in records:
                assert set(r) | ({"tt"} if not r["top"] else set()) == RECORD_KEYS | (HOOK_Z_RECORD_KEYS if sae.hook.endswith("attn.hook_z") else set())
                assert math.isclose(r["max"], summary["max"][r["i"]], rel_tol=1e-9)
                # correlated features: [index, r] of other features, r in (0, 1], highest first
                assert all(0 <= j < n and j != r["i"] and 0 < v <= 1 for j, v in r["cf"])
                assert [v for _, v in r["cf"]] == sorted((v for _, v in r["cf"]), reverse=True)
                assert all(isinstance(j, int) and -1 <= v <= 1 for j, v in r["cn"])
                assert len(r["al"]) == 5 and all(0 < share <= 1 for _, _, share in r["al"])
                lo, hi, counts = r["lh"]  # logit histogram: the range and the counts of every vocabulary token
                counts = packed.ints(counts)
                assert lo <= hi and len(counts) == 50
                vocab_sizes.add(sum(counts))
            indices += [r["i"] for r in records]
        assert indices == list(range(n))
        assert len(vocab_sizes) == 1  # every feature's logit histogram counts the whole vocabulary
        corpus_dirs.add(((site / sae.url).parent / summary["corpus"]).resolve())
    (corpus,) = corpus_dirs
    rows = []
    for number, path in enumerate(sorted(corpus.glob("[0-9]*.js"))):
        name, (shard, shard_rows) = data_call(path)
        assert (name, shard) == ("prompts", number)
        rows += shard_rows
    assert len(rows) == n_prompts and all(len(r) == context and all(isinstance(t, str) for t in r) for r in rows)


def test_corpus_prompts_are_the_documents_in_order(built_site, reference):
    """tokens.npy, decoded, is the corpus text: BOS + the document stream, cut into prompts in order."""
    from transformers import AutoTokenizer

    path, m = _manifest(built_site.content)
    tokenizer = AutoTokenizer.from_pretrained(str((path.parent / m["model"]["path"]).resolve()))
    assert (reference.tokens[:, 0] == tokenizer.bos_token_id).all()
    stream = tokenizer.decode(reference.tokens[:, 1:].reshape(-1).tolist())
    text = (path.parent / m["corpus"]["path"]).resolve().read_text(encoding="utf-8")
    documents = [d.strip() for d in text.split("\n\n") if d.strip()]
    assert tokenizer.eos_token.join(documents).startswith(stream)


def test_top_examples_in_the_site_match_a_brute_force_recomputation(built_site, reference):
    site = built_site.site
    checked = ties = 0
    for sae in _saes(built_site.content):
        acts = reference.acts[sae.id]
        summary = _summary(site, sae)
        cb, ca = summary["context_before"], summary["context_after"]
        for index in range(summary["d_sae"]):
            record = _record(site, sae, index)
            ranked = _ranked(acts, index)
            where = f"{sae.id}:{index}"
            fired = float((acts[:, :, index] > 0).mean())
            assert math.isclose(record["density"], fired, rel_tol=SHARD_REL), f"{where}: density {record['density']} != {fired}"
            if not ranked:
                assert record["max"] == 0 and record["top"] == [], where
                continue
            value, prompt, position = ranked[0]
            ties += len(ranked) > 1 and ranked[1][0] == value
            top = record["top"][0]
            assert (top[0], top[1]) == (prompt, position), f"{where}: top example {top[:3]} != brute force {ranked[0]}"
            assert math.isclose(top[2], value, rel_tol=SHARD_REL), where
            assert math.isclose(record["max"], value, rel_tol=SHARD_REL), where
            # The rest of the top-k follow the same order.
            assert [(e[0], e[1]) for e in record["top"] if e] == [(p, q) for _, p, q in ranked[: len(record["top"])]], where
            # The window: non-zero activations around the peak, as recomputed. After the peak come
            # (slot, q) pairs: token position - context_before + slot has activation * q / 100, q an
            # integer (at least 1 for a non-zero value); the peak itself is implicit.
            pairs = top[3:]
            assert len(pairs) % 2 == 0 and all(isinstance(x, int) for x in pairs), where
            shown = {position - cb + slot: top[2] * q / 100 for slot, q in zip(pairs[0::2], pairs[1::2])}
            shown.setdefault(position, top[2])
            quantum = 0.01 * abs(top[2])
            for t in range(max(0, position - cb), min(acts.shape[1], position + ca + 1)):
                expected = float(acts[prompt, t, index])
                assert (t in shown) == (expected != 0), f"{where}: token {t} non-zero"
                assert math.isclose(shown.get(t, 0.0), expected, rel_tol=2e-3, abs_tol=quantum + 2e-3), f"{where}: token {t}"
            checked += 1
    assert checked > 200
    assert ties > 0, "the fixture should exercise the tie rule (equal activations on the BOS token)"


def _as_shown(token_string: str) -> str:
    """A token string as the site carries it: NUL and lone surrogates become U+FFFD."""
    return re.sub("[\x00\ud800-\udfff]", "\ufffd", token_string)


def test_logits_in_the_site_match_the_unembedded_decoder_directions(built_site, reference):
    """pos/neg: the tokens with the largest and smallest W_dec (through the hook's map) @ W_U."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(reference.model_dir))
    w_u = reference.model.W_U.detach().double().numpy()
    n_logits = _manifest(built_site.content)[1]["compute"]["logits"]
    for sae in _saes(built_site.content):
        logits = residual_directions(reference.model, sae.hook, reference.w_dec[sae.id]) @ w_u
        summary = _summary(built_site.site, sae)
        records = _all_records(built_site.site, sae)
        assert sorted(records) == list(range(summary["d_sae"]))
        for index, record in records.items():
            where = f"{sae.id}:{index}"
            for side, order in (("pos", np.argsort(-logits[index], kind="stable")), ("neg", np.argsort(logits[index], kind="stable"))):
                shown = record[side]
                expected = order[: len(shown)]
                assert len(shown) == n_logits, where
                strings = [_as_shown(tokenizer.decode([int(t)], clean_up_tokenization_spaces=False)) for t in expected]
                assert [t for t, _ in shown] == strings, f"{where} {side}"
                for (_, v), t in zip(shown, expected):
                    assert math.isclose(v, logits[index, t], rel_tol=SHARD_REL, abs_tol=1e-4), f"{where} {side}"
            label = summary["label"][index]
            assert label.startswith(" ".join(t for t, _ in record["pos"][:1])), where


def _dump(built_site: BuiltSite, feature: str) -> dict:
    run = sae_atlas("dump", feature, "--content", built_site.content, "--cache", built_site.cache, cwd=built_site.cache.parent)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_dump_prints_the_design_record_matching_the_brute_force(built_site, reference):
    saes = _saes(built_site.content)
    context_before = _manifest(built_site.content)[1]["compute"]["context_before"]
    # One feature per SAE: the live feature whose top activation is tied, where there is one.
    for sae in saes:
        acts = reference.acts[sae.id]
        live = [i for i in range(acts.shape[2]) if _ranked(acts, i)]
        tied = [i for i in live if len(r := _ranked(acts, i)) > 1 and r[0][0] == r[1][0]]
        index = (tied or live)[0]
        record = _dump(built_site, f"{sae.id}:{index}")
        assert set(record) == DUMP_KEYS
        assert (record["sae"], record["index"]) == (sae.id, index)
        value, prompt, position = _ranked(acts, index)[0]
        top = record["top_examples"][0]
        assert set(top) == EXAMPLE_KEYS | (HOOK_Z_EXAMPLE_KEYS if sae.hook.endswith("attn.hook_z") else set())
        assert (top["prompt"], top["position"]) == (prompt, position), f"{sae.id}:{index}"
        assert math.isclose(top["activation"], value, rel_tol=EXACT_REL)
        assert math.isclose(record["max_activation"], value, rel_tol=EXACT_REL)
        fired = (acts[:, :, index] > 0).mean()
        assert math.isclose(record["density"], fired, rel_tol=EXACT_REL)
        # The example's tokens are the corpus tokens around the peak, with their activations.
        n = len(top["tokens"])
        assert n == len(top["token_strings"]) == len(top["activations"])
        start = max(0, position - context_before)
        assert top["tokens"] == reference.tokens[prompt, start:start + n].tolist()
        assert np.allclose(top["activations"], acts[prompt, start:start + n, index], rtol=2e-3, atol=2e-3)


def test_dump_of_an_unknown_feature_is_an_error_not_a_traceback(built_site):
    run = sae_atlas("dump", "tiny-2l@7-nope:0", "--content", built_site.content, "--cache", built_site.cache)
    assert run.returncode == 1 and "Traceback" not in run.stderr and "tiny-2l@7-nope" in run.stderr


# --- rebuilding -------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stat_snapshot(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_a_warm_build_computes_nothing_and_writes_a_byte_identical_site(built_site, tmp_path):
    before = _stat_snapshot(built_site.cache)
    run = sae_atlas("build", "--content", built_site.content, "--out", tmp_path / "site", "--cache", built_site.cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "pass" not in run.output.lower(), f"a warm build ran a compute pass:\n{run.output}"
    assert _stat_snapshot(built_site.cache) == before, "a warm build wrote to the cache"
    assert run.seconds < max(30.0, built_site.build.seconds / 2), f"warm build took {run.seconds:.1f} s"
    assert _snapshot(tmp_path / "site") == _snapshot(built_site.site)


def test_render_alone_builds_the_same_site_without_torch(built_site, tmp_path):
    # A `torch` that cannot be imported: render must not need it, directly or through a dependency.
    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('sae-atlas render imported torch')\n")
    run = sae_atlas("render", "--quiet", "--content", built_site.content, "--out", tmp_path / "site", "--cache",
                    built_site.cache, cwd=tmp_path, env={"PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])})
    assert run.returncode == 0, run.stderr
    assert _snapshot(tmp_path / "site") == _snapshot(built_site.site)


def test_compute_without_replay_memory_runs_the_model_twice_and_writes_identical_entries(built_site, tmp_path):
    cache = tmp_path / "cache"
    run = sae_atlas("compute", "--replay-memory", "0", "--batch-size", "7", "--content", built_site.content, "--cache", cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "pass 2/2" in run.output
    for entry in (built_site.cache / "sae").iterdir():
        assert _snapshot(cache / "sae" / entry.name) == _snapshot(entry), entry.name
    bad = sae_atlas("compute", "--replay-memory", "lots", "--content", built_site.content, "--cache", cache, cwd=tmp_path)
    assert bad.returncode == 2 and "expected a size such as 0, 512M or 4G" in bad.stderr
