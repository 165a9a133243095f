"""Lean string encodings of feature shard columns (docs/ARCHITECTURE.md "Site", "Packed columns").

A packed column is one JSON string of self-delimiting base-89 numbers ("codes"), read back by
`Atlas.decodeRecord` in the front end. The 89 digits are the printable ASCII characters that JSON
and the site's script escaping leave as one byte (not `"`, `\\`, `<`, `>`, `&`) and not `.`, which
is kept as a marker. The first `TERMINAL` digits end a number, the other `CONTINUATION` precede
its last digit: a number of m continuation digits c_1..c_m and a terminal digit t is
`offset(m) + (c_1 ... c_m in base CONTINUATION) * TERMINAL + t`, offset(m) the count of numbers
with fewer digits. So 0..59 take one character, 60..1,799 two, 1,800..52,259 three.

Columns packed:
- `tt` (the text of the top examples, see `TopText`): ranks into the corpus's `vocab.js`.
- `hist`: its counts, in order. `lh` `[lo, hi, counts]`: lo and hi as they are, the counts packed.
- `dfa`, `loss` `[[offsets], [q]]` per example: per example the number of values, then each
  offset as the gap after the previous one (the first from -1) and each q zigzagged (0, -1, 1,
  -2, ... -> 0, 1, 2, 3, ...).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import orjson

DIGITS = "".join(c for c in map(chr, range(0x20, 0x7F)) if c not in '"\\<>&.')
TERMINAL = 60
CONTINUATION = len(DIGITS) - TERMINAL
END = "."  # in `tt`: the token before it is its prompt's last
TEXT_CONTEXT = 5  # tokens each side of the peak in `tt`: what an example row shows by default (±5)

assert len(DIGITS) == 89 and CONTINUATION == 29


def code(v: int) -> str:
    """The code of a non-negative integer."""
    if v < 0:
        raise ValueError(f"cannot pack {v}")
    m, offset, span = 0, 0, TERMINAL
    while v >= offset + span:
        offset += span
        span *= CONTINUATION
        m += 1
    v -= offset
    out = [DIGITS[v % TERMINAL]]
    v //= TERMINAL
    for _ in range(m):
        out.append(DIGITS[TERMINAL + v % CONTINUATION])
        v //= CONTINUATION
    return "".join(reversed(out))


@functools.lru_cache(maxsize=8)
def codes(n: int) -> tuple[str, ...]:
    return tuple(code(v) for v in range(n))


def pack(values) -> str:
    table = codes(4096)
    return "".join(table[v] if 0 <= v < 4096 else code(v) for v in values)


def zigzag(q: int) -> int:
    return 2 * q if q >= 0 else -2 * q - 1


def pack_example_values(column: list) -> str:
    """`dfa`/`loss` `[[offsets], [q]]` per example -> one string."""
    out = []
    for offsets, qs in column:
        out.append(code(len(offsets)))
        previous = -1
        for offset, q in zip(offsets, qs):
            out.append(code(offset - previous - 1))
            out.append(code(zigzag(q)))
            previous = offset
    return "".join(out)


def pack_columns(record: dict) -> dict:
    """The record with its packable columns packed (in place; returns it)."""
    if isinstance(record.get("hist"), list):
        record["hist"] = pack(record["hist"])
    lh = record.get("lh")
    if isinstance(lh, list) and len(lh) == 3 and isinstance(lh[2], list):
        record["lh"] = [lh[0], lh[1], pack(lh[2])]
    for key in ("dfa", "loss"):
        if isinstance(record.get(key), list):
            record[key] = pack_example_values(record[key])
    return record


# ---------- corpus ranking and the top examples' text ----------


@functools.lru_cache(maxsize=4)
def corpus_ranking(corpus_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids by rank, rank of each id (-1: not in the corpus), length of each prompt) for a cache
    corpus: ranked by how often the token occurs in the corpus, most frequent first (ties by id).
    A mirror's prompts (padded with id 0) end at their row's last token that is not 0."""
    tokens = np.load(Path(corpus_dir, "tokens.npy"), mmap_mode="r", allow_pickle=False)
    padded = orjson.loads(Path(corpus_dir, "meta.json").read_bytes()).get("source") == "neuronpedia"
    n_prompts, context = tokens.shape
    arr = np.asarray(tokens)
    if padded:
        nonzero = arr != 0
        last = np.where(nonzero.any(axis=1), context - np.argmax(nonzero[:, ::-1], axis=1), 0)
        lengths = last.astype(np.int64)
        inside = np.arange(context)[None, :] < lengths[:, None]
        counts = np.bincount(arr[inside].astype(np.int64), minlength=int(arr.max(initial=0)) + 1)
    else:
        lengths = np.full(n_prompts, context, np.int64)
        counts = np.bincount(arr.reshape(-1).astype(np.int64), minlength=int(arr.max(initial=0)) + 1)
    present = np.nonzero(counts)[0]
    order = present[np.argsort(-counts[present], kind="stable")]
    rank = np.full(len(counts), -1, np.int64)
    rank[order] = np.arange(len(order))
    return order, rank, lengths


class TopText:
    """`tt` of records: for each top example in order, the ranks of the tokens
    max(0, position - TEXT_CONTEXT) .. min(length - 1, position + TEXT_CONTEXT) of its prompt, with
    END after them when the last of them is the prompt's last token."""

    def __init__(self, corpus_dir: str):
        self.tokens = np.load(Path(corpus_dir, "tokens.npy"), mmap_mode="r", allow_pickle=False)
        _, rank, self.lengths = corpus_ranking(corpus_dir)
        self.rank = rank
        n = int(rank.max(initial=-1)) + 1
        # The code of each rank, then END and the empty string (positions outside the prompt).
        self.table = np.array(list(codes(n)) + [END, ""], dtype=object)
        self.end, self.none = n, n + 1

    def texts(self, examples: list[list]) -> list[str]:
        """`tt` of each record, given each record's `top` (lists starting [prompt, position, ...])."""
        counts = [len(top) for top in examples]
        flat = [e for top in examples for e in top]
        if not flat:
            return [""] * len(examples)
        prompt = np.array([e[0] for e in flat], np.int64)
        position = np.array([e[1] for e in flat], np.int64)
        k = TEXT_CONTEXT
        t = position[:, None] + np.arange(-k, k + 2)[None, :]  # one past the window, for END
        length = self.lengths[prompt][:, None]
        inside = (t >= 0) & (t < length)
        inside[:, -1] = False
        ids = np.asarray(self.tokens[prompt[:, None], np.clip(t, 0, self.tokens.shape[1] - 1)], np.int64)
        index = np.where(inside, self.rank[ids], self.none)
        index[t == length] = self.end  # right after the last token shown when it is the prompt's last
        cells = self.table[index]
        out, at = [], 0
        for n in counts:
            out.append("".join(cells[at : at + n].reshape(-1).tolist()))
            at += n
        return out
