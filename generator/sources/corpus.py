"""Corpora -> int32 [prompts, context] token arrays, cached as corpus/<corpus_key>/.

- `.txt`: documents separated by blank lines; `.jsonl` with `text`: one document per line.
  Each document is tokenized, documents are joined into one stream with the separator token (EOS,
  else BOS) between them, and the stream is cut into prompts of `context` tokens, each starting with
  BOS when the tokenizer has one.
- `.jsonl` with `tokens`: pre-tokenized prompts, used exactly as given (the first `context` ids of
  each line; no BOS added).
Prompts are numbered from 0 in corpus order. `vocab` is the display string of every token id
(each id decoded alone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import orjson

from generator.cache import CacheStore, corpus_key, write_entry
from generator.errors import InputError, Problem, problem_at
from generator.manifest import Release


@dataclass
class Corpus:
    key: str
    tokens: np.ndarray  # int32 [prompts, context]
    vocab: list[str]

    @property
    def n_prompts(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def context(self) -> int:
        return int(self.tokens.shape[1])


def read_text_documents(path: Path) -> Iterator[str]:
    """Documents of a .txt (blank-line separated) or .jsonl ({"text": ...} per line) file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        for line_no, obj in _jsonl(path):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise InputError([problem_at(path, 'missing "text" string; expected {"text": "..."} per line', line_no, 1)])
            yield text
        return
    doc: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc.append(line.rstrip("\n"))
            elif doc:
                yield "\n".join(doc)
                doc = []
    if doc:
        yield "\n".join(doc)


def _jsonl(path: Path) -> Iterator[tuple[int, object]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError([problem_at(path, f"invalid JSON ({e.msg}); expected one JSON object per line", line_no, e.colno)]) from e


def is_pretokenized(path: Path) -> bool:
    """A .jsonl whose first object has `tokens`."""
    if Path(path).suffix != ".jsonl":
        return False
    for _, obj in _jsonl(path):
        return isinstance(obj, dict) and "tokens" in obj
    return False


def read_token_prompts(path: Path, prompts: int, context: int, d_vocab: int) -> np.ndarray:
    rows: list[list[int]] = []
    problems: list[Problem] = []
    for line_no, obj in _jsonl(path):
        if len(rows) >= prompts:
            break
        tokens = obj.get("tokens") if isinstance(obj, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            problems.append(problem_at(path, 'missing "tokens" list of ints; expected {"tokens": [id, ...]} per line', line_no, 1))
            continue
        if len(tokens) < context:
            problems.append(problem_at(path, f"prompt has {len(tokens)} tokens; expected at least context={context}", line_no, 1))
            continue
        bad = [t for t in tokens[:context] if not 0 <= t < d_vocab]
        if bad:
            problems.append(problem_at(path, f"token id {bad[0]} out of range; expected 0 <= id < {d_vocab}", line_no, 1))
            continue
        rows.append(tokens[:context])
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError([problem_at(path, "no prompts; expected at least one {\"tokens\": [...]} line")])
    return np.asarray(rows, dtype=np.int32)


def pack_documents(documents: Iterable[list[int]], prompts: int, context: int, bos: int | None, separator: int | None) -> np.ndarray:
    """Join documents with `separator` between them and cut the stream into prompts of `context`
    tokens, each starting with `bos` if given. Stops after `prompts` prompts; a final partial
    prompt is dropped."""
    body = context - 1 if bos is not None else context
    if body <= 0:
        raise ValueError("context too small")
    out = np.zeros((prompts, context), dtype=np.int32)
    buffer: list[int] = []
    n = 0
    first = True
    for doc in documents:
        if not first and separator is not None:
            buffer.append(separator)
        first = False
        buffer.extend(doc)
        while len(buffer) >= body and n < prompts:
            row = ([bos] if bos is not None else []) + buffer[:body]
            out[n] = row
            del buffer[:body]
            n += 1
        if n >= prompts:
            break
    return out[:n]


def vocab_strings(tokenizer) -> list[str]:
    n = len(tokenizer)
    return list(tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False))


def tokenize_corpus(release: Release, tokenizer, d_vocab: int | None = None) -> np.ndarray:
    c = release.corpus
    d_vocab = d_vocab or len(tokenizer)
    if c.path is not None and is_pretokenized(c.path):
        return read_token_prompts(c.path, c.prompts, c.context, d_vocab)
    documents: Iterable[str]
    if c.path is not None:
        documents = read_text_documents(c.path)
        where: Path | str = c.path
    else:
        documents = _dataset_documents(str(c.dataset))
        where = str(c.dataset)
    from generator.sources.configs import release_prepend_bos

    bos = tokenizer.bos_token_id if release_prepend_bos(release) else None
    separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    encoded = (tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in documents)
    tokens = pack_documents(encoded, c.prompts, c.context, bos, separator)
    if len(tokens) == 0:
        raise InputError([problem_at(where, f"corpus has fewer than {c.context} tokens; expected enough text for at least one prompt")])
    return tokens


def _dataset_documents(name: str) -> Iterator[str]:
    """Streamed `text` column of a Hugging Face dataset (needs the hub)."""
    from datasets import load_dataset

    for row in load_dataset(name, split="train", streaming=True):
        yield row["text"]


def load_corpus(release: Release, cache_root: Path, tokenizer_loader: Callable[[], object]) -> Corpus:
    """The release's corpus from the cache, tokenizing (and caching) it first if needed."""
    store = CacheStore(cache_root)
    key = corpus_key(release)
    entry = store.corpus(key)
    if entry is not None:
        return Corpus(key, np.asarray(entry["tokens"]), store.vocab(key))
    tokenizer = tokenizer_loader()
    tokens = tokenize_corpus(release, tokenizer)
    vocab = vocab_strings(tokenizer)
    meta = {
        "corpus": str(release.corpus.path.name if release.corpus.path else release.corpus.dataset),
        "prompts": int(tokens.shape[0]),
        "context": int(tokens.shape[1]),
        "requested_prompts": release.corpus.prompts,
        "d_vocab": len(vocab),
    }
    write_entry(store.corpus_dir(key), meta, {"tokens": tokens}, {"vocab.json": orjson.dumps(vocab)})
    return Corpus(key, tokens, vocab)
