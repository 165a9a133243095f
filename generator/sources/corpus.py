"""Corpora -> int32 [prompts, context] token arrays, cached as corpus/<corpus_key>/.

- `.txt`: documents separated by blank lines; `.jsonl` with `text`: one document per line.
  Each document is tokenized, documents are joined into one stream with the separator token (EOS,
  else BOS) between them, and the stream is cut into prompts of `context` tokens, each starting with
  BOS when the tokenizer has one.
- `.jsonl` with `tokens`: pre-tokenized prompts, used exactly as given (the first `context` ids of
  each line; no BOS added).
- `dataset: NAME`: the `text` column of the Hugging Face dataset's `train` split, streamed in order and
  packed like text files. With the hub offline (HF_HUB_OFFLINE=1) it is read from the hub cache's
  snapshot of the dataset repo; a dataset that is not there is an input error naming the command
  that fetches it.
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

from sae_atlas.cache import CacheStore, corpus_key, write_entry
from sae_atlas.errors import InputError, Problem, problem_at
from sae_atlas.manifest import CorpusSpec, Mark, Release


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


def prepend_bos_problem(who: str, trained: bool | None, corpus: CorpusSpec) -> str | None:
    """Why an SAE trained with SAELens's `prepend_bos` = `trained` (None: not said) cannot read this
    corpus, or None: a text corpus starts its prompts with BOS as `corpus.prepend_bos` says, and
    pre-tokenized prompts are used exactly as given."""
    if trained is None or trained == corpus.prepend_bos or (corpus.path is not None and is_pretokenized(corpus.path)):
        return None
    want = str(trained).lower()
    return (
        f"{who} was trained with prepend_bos: {want} but corpus.prepend_bos is {str(corpus.prepend_bos).lower()}; "
        f"expected corpus.prepend_bos: {want} (SAEs trained otherwise go in a release of their own)"
    )


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


# The transformers classes whose decode of one id is exactly the Rust tokenizer's decode of it with
# the special tokens kept (the clean-up of spaces is off here): (owner of `_decode`) and (of `decode`,
# `batch_decode`). A tokenizer class that overrides any of them decodes through transformers.
_RUST_DECODE = {"transformers.tokenization_utils_tokenizers.TokenizersBackend", "transformers.tokenization_utils_fast.PreTrainedTokenizerFast"}
_BASE_DECODE = "transformers.tokenization_utils_base.PreTrainedTokenizerBase"


def _owner(cls: type, name: str) -> str | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            return f"{klass.__module__}.{klass.__qualname__}"
    return None


def rust_decoder(tokenizer):
    """The `tokenizers.Tokenizer` whose `decode([i], skip_special_tokens=False)` is
    `tokenizer.batch_decode([[i]], clean_up_tokenization_spaces=False)[0]` for every id, or None."""
    cls = type(tokenizer)
    if _owner(cls, "_decode") not in _RUST_DECODE or any(_owner(cls, m) != _BASE_DECODE for m in ("decode", "batch_decode")):
        return None
    return getattr(tokenizer, "_tokenizer", None)


def vocab_strings(tokenizer) -> list[str]:
    """The display string of every token id, each id decoded alone. Through the Rust tokenizer
    where that is what transformers would call (0.3 s less for 50k ids); one id at a time, not
    `decode_batch`, whose thread pool would make a later fork warn and run single-threaded."""
    n = len(tokenizer)
    rust = rust_decoder(tokenizer)
    if rust is not None:
        return [rust.decode([i], skip_special_tokens=False) for i in range(n)]
    return list(tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False))


def tokenize_corpus(release: Release, tokenizer, d_vocab: int | None = None) -> np.ndarray:
    c = release.corpus
    d_vocab = d_vocab or len(tokenizer)
    if c.path is not None and is_pretokenized(c.path):
        return read_token_prompts(c.path, c.prompts, c.context, d_vocab)
    documents: Iterable[str]
    if c.path is not None:
        documents = read_text_documents(c.path)
        short = problem_at(c.path, f"corpus has fewer than {c.context} tokens; expected enough text for at least one prompt")
    else:
        documents = _dataset_documents(str(c.dataset), c.mark_of("dataset"))
        short = _at(c.mark_of("dataset"), f"dataset '{c.dataset}' has fewer than {c.context} tokens; expected enough text for at least one prompt")
    bos = tokenizer.bos_token_id if c.prepend_bos else None
    separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    encoded = (tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in documents)
    tokens = pack_documents(encoded, c.prompts, c.context, bos, separator)
    if len(tokens) == 0:
        raise InputError([short])
    return tokens


def _dataset_documents(name: str, mark: Mark) -> Iterator[str]:
    """Streamed `text` column of a Hugging Face dataset's train split (the hub, or its cache offline)."""
    from datasets import load_dataset

    source = _dataset_source(name, mark)
    try:
        rows = iter(load_dataset(source, split="train", streaming=True))
        for row in rows:
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise InputError([_at(mark, f"dataset '{name}' has no \"text\" string column; expected a text dataset")])
            yield text
    except (OSError, ValueError) as e:  # not found, unreachable (ConnectionError is an OSError), unreadable data files
        raise InputError([_at(mark, f"cannot load dataset '{name}' ({_first_line(e)}); expected a dataset on the Hugging Face hub with a train split")]) from e


def _dataset_source(name: str, mark: Mark) -> str:
    """What `load_dataset` reads: the hub name online; offline, the cached snapshot directory."""
    import datasets.config
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not datasets.config.HF_HUB_OFFLINE:
        return name
    try:
        return snapshot_download(name, repo_type="dataset", local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as e:
        raise InputError([_at(mark, f"dataset '{name}' is not in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE); fetch it first with `hf download {name} --repo-type dataset`")]) from e


def _at(mark: Mark, message: str) -> Problem:
    return problem_at(mark.file, message, mark.line, mark.col)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _model_vocab(release: Release) -> int | None:
    """The model's d_vocab from its config (torch-free), which a padded vocabulary makes larger
    than the tokenizer; None when the config cannot be read (the tokenizer's size is used)."""
    from sae_atlas.sources.configs import ConfigError, read_model_config

    try:
        config = read_model_config(release.model)
    except ConfigError:
        return None
    d_vocab = (config or {}).get("d_vocab")
    return d_vocab if isinstance(d_vocab, int) and d_vocab > 0 else None


def load_corpus(release: Release, cache_root: Path, tokenizer_loader: Callable[[], object]) -> Corpus:
    """The release's corpus from the cache, tokenizing (and caching) it first if needed."""
    store = CacheStore(cache_root)
    key = corpus_key(release)
    entry = store.corpus(key)
    if entry is not None:
        return Corpus(key, np.asarray(entry["tokens"]), store.vocab(key))
    tokenizer = tokenizer_loader()
    tokens = tokenize_corpus(release, tokenizer, _model_vocab(release))
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
