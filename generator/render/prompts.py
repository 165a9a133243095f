"""Data files of the prompt view and of the curated feature lists.

Prompt view (per model and corpus, `MODEL/prompts/NNNN.js`, NNNN = the prompt number): for every
SAE of the page, each token's strongest features with their activation (the `prompt_view`
statistic's arrays) and the labels of the features that occur, so that the page never needs an
SAE's summary. Lists (`RELEASE/lists/ID.js`): one compact record per listed feature, made from the
statistics' site columns (`sae_atlas.stats.records`). Jobs are picklable for the render pool.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae_atlas import stats as statistics
from sae_atlas.render import shards
from sae_atlas.render.write import SiteWriter
from sae_atlas.stats.common import round_sig

PROMPTS_PER_TASK = 64  # prompt files one render task writes
LIST_EXAMPLES = 3  # top examples shown per feature card of a list


def open_arrays(entry_dir: str, names) -> dict[str, np.ndarray]:
    """The entry's arrays among `names` that exist, memory-mapped."""
    out = {}
    for name in names:
        path = Path(entry_dir, f"{name}.npy")
        if path.exists():
            out[name] = np.load(path, mmap_mode="r", allow_pickle=False)
    return out


def feature_labels(arrays: dict[str, np.ndarray], vocab: tuple[str, ...], explanations: dict[int, str], features) -> dict[int, str]:
    """A short label per feature: its first explanation's text, else its top positive-logit tokens
    (the summary's `label`)."""
    logits = arrays.get("pos_logit_token")
    out = {}
    for f in features:
        text = explanations.get(f)
        if not text and logits is not None:
            text = " ".join(vocab[t] for t in np.asarray(logits[f, : shards.LABEL_TOKENS]).tolist() if t >= 0)
        out[f] = text or ""
    return out


# --- prompt view ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSae:
    """One SAE of a prompt view page."""

    sae_id: str
    href: str  # its SAE page, relative to the prompt view page
    entry_dir: str
    viewed: int  # its prompts with per-token features (P)
    explanations: dict[int, str]  # first explanation's plain text per feature


@dataclass(frozen=True)
class PromptViewJob:
    """Write the prompt files lo..hi-1 of one prompt view page (picklable)."""

    data_dir: str  # site-relative, e.g. "gpt2-small/prompts"
    corpus_dir: str
    saes: tuple[PromptSae, ...]
    lo: int
    hi: int


def prompt_view_jobs(data_dir: str, corpus_dir: str, saes: tuple[PromptSae, ...], viewed: int) -> list[PromptViewJob]:
    return [
        PromptViewJob(data_dir, corpus_dir, saes, lo, min(viewed, lo + PROMPTS_PER_TASK))
        for lo in range(0, viewed, PROMPTS_PER_TASK)
    ]


def prompt_file(data_dir: str, prompt: int) -> str:
    return posixpath.join(data_dir, shards.shard_name(prompt))


def prompt_object(prompt: int, saes: tuple[PromptSae, ...], arrays: list[dict], vocabs: list[tuple[str, ...]]) -> dict:
    """`{prompt, saes: [{sae, href, f, labels}]}`: `f[t]` lists token t's features as [feature,
    activation] (strongest first; null where the SAE has no features for this prompt) and `labels`
    maps each feature that occurs to its label."""
    out = []
    for sae, a, vocab in zip(saes, arrays, vocabs):
        if prompt >= sae.viewed:
            out.append({"sae": sae.sae_id, "href": sae.href, "f": None, "labels": {}})
            continue
        feature = np.asarray(a["prompt_feature"][prompt])
        value = round_sig(a["prompt_value"][prompt]).tolist()
        per_token = [[[f, v] for f, v in zip(fs, vs) if f >= 0] for fs, vs in zip(feature.tolist(), value)]
        used = sorted({int(f) for f in np.unique(feature) if f >= 0})
        labels = feature_labels(a, vocab, sae.explanations, used)
        out.append({"sae": sae.sae_id, "href": sae.href, "f": per_token, "labels": {str(f): labels[f] for f in used}})
    return {"prompt": prompt, "saes": out}


def write_prompt_view(job: PromptViewJob, site_root: str) -> tuple[int, int]:
    """Write `AtlasData.promptView(N, {...})` for prompts lo..hi-1; returns (files, bytes)."""
    writer = SiteWriter(Path(site_root))
    arrays = [open_arrays(sae.entry_dir, ("prompt_feature", "prompt_value", "pos_logit_token")) for sae in job.saes]
    vocabs = [
        shards.display_vocab(job.corpus_dir, *([a["pos_logit_token"]] if "pos_logit_token" in a else [])) for a in arrays
    ]
    for prompt in range(job.lo, job.hi):
        body = shards.to_json(prompt_object(prompt, job.saes, arrays, vocabs))
        writer.write(prompt_file(job.data_dir, prompt), shards.js_call("promptView", str(prompt).encode(), body))
    return writer.files, writer.bytes


# --- lists ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFeatureJob:
    sae: shards.SaeDataJob  # the SAE's data job (entry, corpus, explanations, cross-layer neighbours)
    href: str  # its SAE page, relative to the list page (append `#` + index)
    index: int


@dataclass(frozen=True)
class ListJob:
    """Write one list's data file (picklable)."""

    path: str  # site-relative, e.g. "my-release/lists/induction.js"
    list_id: str
    title: str
    corpus_href: str  # the corpus shards, relative to the list page
    prompts_per_shard: int
    context_before: int
    context_after: int
    features: tuple[ListFeatureJob, ...]


def list_card(feature: ListFeatureJob, arrays: dict[str, np.ndarray], vocab: tuple[str, ...]) -> dict:
    """A feature card: sae, href, i, max, density, label, expl [{html, author, score}], top (the
    first LIST_EXAMPLES examples, in the shards' example encoding)."""
    job, i = feature.sae, feature.index
    (record,) = statistics.records(arrays, i, i + 1, statistics.RecordContext(vocab, job.context_before, job))
    expl = job.explanations.get(i, ())
    label = feature_labels(arrays, vocab, {i: expl[0]["text"]} if expl else {}, [i])[i]
    return {
        "sae": job.sae_id,
        "href": feature.href,
        "i": i,
        "max": record.get("max"),
        "density": record.get("density"),
        "label": label,
        "expl": [
            {"html": e["html"], "author": e["author"], "score": e["score"], **({"scores": e["scores"]} if e.get("scores") else {})}
            for e in expl
        ],
        "top": [ex for ex in record.get("top", []) if ex is not None][:LIST_EXAMPLES],
    }


def list_object(job: ListJob) -> dict:
    cards = []
    opened: dict[str, tuple[dict, tuple[str, ...]]] = {}
    for feature in job.features:
        sae = feature.sae
        if sae.entry_dir not in opened:
            arrays = open_arrays(sae.entry_dir, statistics.arrays_of(statistics.REGISTRY))
            token_arrays = [arrays[n] for n in statistics.TOKEN_ARRAYS if n in arrays]
            opened[sae.entry_dir] = (arrays, shards.display_vocab(sae.corpus_dir, *token_arrays))
        cards.append(list_card(feature, *opened[sae.entry_dir]))
    return {
        "id": job.list_id,
        "title": job.title,
        "corpus": job.corpus_href,
        "prompts_per_shard": job.prompts_per_shard,
        "context_before": job.context_before,
        "context_after": job.context_after,
        "features": cards,
    }


def write_list(job: ListJob, site_root: str) -> tuple[int, int]:
    """Write `AtlasData.featureList({...})`; returns (files, bytes)."""
    writer = SiteWriter(Path(site_root))
    writer.write(job.path, shards.js_call("featureList", shards.to_json(list_object(job))))
    return writer.files, writer.bytes
