"""`sae-atlas dump`: one feature's computed record, read from its cache entry (exact values).

The record is each statistic's dump keys (`sae_atlas.stats`) in registry order; the Neuronpedia
exporter builds its rows from the same records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_atlas import stats as statistics
from sae_atlas.cache import DEFAULT_DTYPE, CacheStore, Entry, corpus_key, missing_entry_hint, sae_key
from sae_atlas.errors import AtlasError
from sae_atlas.ids import parse_feature_id
from sae_atlas.manifest import Release


def feature_record(entry: Entry, tokens: np.ndarray, vocab, index: int) -> dict:
    """The computed record of feature `index` of an SAE entry (the `sae-atlas dump` format): each
    statistic's keys (`sae_atlas.stats`), in registry order."""
    m = entry.meta
    d_sae = int(m["d_sae"])
    if not 0 <= index < d_sae:
        raise AtlasError(f"feature index {index} out of range for {m['sae_id']}; expected 0 <= index < {d_sae}")
    ctx = statistics.DumpContext(m, tokens, vocab)
    return {"sae": m["sae_id"], "index": index, **statistics.dump(entry.arrays, index, ctx)}


def dump_feature(releases: list[Release], cache_root: Path, feature: str, dtype: str = DEFAULT_DTYPE) -> dict:
    """`MODEL@LAYER-SET:INDEX` -> its record computed with `dtype`; AtlasError if unknown or not computed."""
    try:
        sae_id, index = parse_feature_id(feature)
    except ValueError as e:
        raise AtlasError(str(e)) from None
    for release in releases:
        for spec in release.saes():
            if spec.sae_id == sae_id:
                store = CacheStore(cache_root)
                entry = store.sae_entry(sae_key(release, spec, dtype))
                corpus = store.corpus(corpus_key(release))
                if entry is None or corpus is None:
                    hint = missing_entry_hint(store, release, spec, dtype)
                    raise AtlasError(
                        f"{sae_id} is not computed with --dtype {dtype} in {cache_root}{hint or '; run `sae-atlas compute` first'}"
                    )
                # The site's token strings (cleaned of lone surrogates and NUL, which JSON cannot carry).
                from sae_atlas.render.shards import load_vocab

                vocab = load_vocab(str(store.corpus_dir(corpus_key(release))))
                return feature_record(entry, np.asarray(corpus["tokens"]), vocab, index)
    known = sorted(spec.id for r in releases for spec in r.saes())
    raise AtlasError(f"unknown SAE {sae_id}; known: {', '.join(known) or 'none'}")
