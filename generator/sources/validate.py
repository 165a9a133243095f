"""Checks of releases against the files they name, before any model is loaded (no torch).

Every problem is reported at the manifest position of the entry that names the file, with the file
(and its line, for corpora and explanations) in the message, all of them in one InputError. Models
and SAEs named by the hub are checked from their config files in the hub cache (configs.py); the
files that cannot be had are reported once per hub repo, with the command that fetches them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_atlas.errors import InputError, Problem
from sae_atlas.manifest import Mark, Release, SaeSpec, SetSpec
from sae_atlas.sources.architectures import architecture_info
from sae_atlas.sources.corpus import prepend_bos_problem
from sae_atlas.sources.explanations import detect_format, load_explanations
from sae_atlas.sources.configs import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    SAE_CONFIG,
    SAE_WEIGHTS,
    TOKENIZER_FILE,
    ConfigError,
    HubFileMissing,
    fetch_command,
    forget_unreachable_hub,
    hook_needs_flag,
    hook_width,
    is_int,
    model_config_problems,
    pretrained_sae_config,
    pretrained_saes_directory,
    read_model_config,
    read_sae_config,
    safetensors_header,
    sae_architecture,
    sae_hook_name,
    sae_hook_out_name,
    sae_metadata,
    sae_prepend_bos,
    transformer_lens_names_known,
    transformer_lens_official_name,
    valid_hooks,
)

# At most this many bad lines are listed per corpus or explanations file; the rest are counted.
MAX_LINE_PROBLEMS = 5
_TOKENIZE_BATCH = 256


# TransformerLens flags the engine sets when an SAE's hook needs them (ModelBackend.enable_hooks).
ENGINE_FLAGS = ("use_hook_mlp_in",)


def validate_sources(releases: list[Release]) -> None:
    """Raise InputError with every problem found in the files the releases name."""
    forget_unreachable_hub()
    problems: list[Problem] = []
    missing: dict[str, _MissingRepo] = {}  # shared: one line per hub repo, whichever releases need it
    for release in releases:
        check = _ReleaseCheck(release, missing)
        if release.neuronpedia_export is None:
            problems.extend(check.run())
        elif release.explanations is not None:  # a mirror's export is checked row by row when imported
            check.check_explanations(release.explanations)
            problems.extend(check.problems)
    problems.extend(_hub_missing_problems(missing))
    if problems:
        raise InputError(list(dict.fromkeys(problems)))


def _suggest(word: str, choices: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


@dataclass
class _MissingRepo:
    mark: Mark  # where the first name needing the repo is
    what: str  # what needs it, e.g. "model 'gpt2'"
    reason: str  # why it cannot be had (offline, unreachable, refused)
    files: list[str] = field(default_factory=list)


def _hub_missing_problems(missing: dict[str, _MissingRepo]) -> list[Problem]:
    """One problem per hub repo with files that cannot be had, with the command that fetches them."""
    problems = []
    for repo_id, found in missing.items():
        message = (
            f"{found.what} needs {', '.join(found.files)} from hub repo '{repo_id}', {found.reason}; "
            f"expected it in the hub cache: fetch it with `{fetch_command(repo_id, found.files)}`"
        )
        problems.append(Problem(found.mark.file, found.mark.line, found.mark.col, message))
    return problems


class _ReleaseCheck:
    def __init__(self, release: Release, missing: dict[str, _MissingRepo]):
        self.release = release
        self.problems: list[Problem] = []
        self.config: dict[str, Any] | None = None  # the model's normalised config, when knowable
        self.tokenizer_file: Path | None = None
        self.d_sae: dict[str, int] = {}  # SAE id -> d_sae, where known
        self.missing = missing  # hub repo -> the files of it that cannot be had
        self.registry_model_reported = False  # the current SAE's registry model was reported as wrong

    def at(self, mark: Mark, message: str) -> None:
        self.problems.append(Problem(mark.file, mark.line, mark.col, message))

    def run(self) -> list[Problem]:
        self.check_model()
        self.check_corpus()
        for spec in self.release.sets:
            hook_reported = False
            for sae in spec.saes:
                hook_reported = self.check_sae(spec, sae, hook_reported)
        if self.release.explanations is not None:
            self.check_explanations(self.release.explanations)
        return self.problems

    # -- model

    def check_model(self) -> None:
        model = self.release.model
        if model.path is not None:
            self.check_local_model(model.path, model.mark_of("path"))
        elif model.transformer_lens:
            mark = model.mark_of("transformer_lens")
            known = transformer_lens_names_known()
            if known is not None and transformer_lens_official_name(model.transformer_lens) is None:
                hint = _suggest(model.transformer_lens, known) or "see TransformerLens's list of supported models"
                self.at(mark, f"model.transformer_lens '{model.transformer_lens}' is not a TransformerLens model; {hint}")
                return
            try:
                self.config = read_model_config(model)
            except HubFileMissing as missing:
                self.hub_missing(missing, mark, f"model '{model.transformer_lens}'")
            except ConfigError as e:
                self.at(mark, f"model '{model.transformer_lens}': {e}; expected a hub config TransformerLens can convert")

    def check_local_model(self, directory: Path, mark: Mark) -> None:
        if not (directory / MODEL_CONFIG).is_file():
            self.at(mark, f"model directory has no {MODEL_CONFIG}; expected the HookedTransformerConfig fields as JSON")
        else:
            try:
                config = read_model_config(self.release.model)
            except ConfigError as e:
                self.at(mark, f"model {e}; expected the HookedTransformerConfig fields as a JSON object")
                config = None
            if config is not None:
                issues = model_config_problems(config)
                for issue in issues:
                    self.at(mark, f"model {MODEL_CONFIG}: {issue}")
                if not issues:
                    self.config = config
        weights = directory / MODEL_WEIGHTS
        if not weights.is_file():
            self.at(mark, f"model directory has no {MODEL_WEIGHTS}; expected the HookedTransformer state dict in safetensors format")
        else:
            try:
                safetensors_header(weights)
            except ConfigError as e:
                self.at(mark, f"model weights: {e}; expected a complete safetensors file")
        if (directory / TOKENIZER_FILE).is_file():
            self.tokenizer_file = directory / TOKENIZER_FILE
        elif not (directory / "tokenizer_config.json").is_file():
            self.at(mark, f"model directory has no tokenizer ({TOKENIZER_FILE}); expected a tokenizer saved with save_pretrained")

    # -- corpus

    def check_corpus(self) -> None:
        corpus = self.release.corpus
        if corpus.path is None:
            return  # a hub dataset: nothing local to check
        config = self.config or {}
        n_ctx = config.get("n_ctx")
        if is_int(n_ctx) and corpus.context > n_ctx:
            self.at(corpus.mark_of("context"), f"corpus.context is {corpus.context} but model '{self.release.model.id}' has n_ctx {n_ctx}; expected at most {n_ctx}")
        reader = _CorpusReader(corpus.path)
        if corpus.path.suffix == ".jsonl":
            self.check_jsonl_corpus(reader)
        else:
            self.check_text_corpus(reader, reader.text_documents())

    def tokenizer(self) -> Any:
        if self.tokenizer_file is None:
            return None
        try:
            from tokenizers import Tokenizer
        except ImportError:
            return None
        try:
            return Tokenizer.from_file(str(self.tokenizer_file))
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
            self.at(self.release.model.mark_of("path"), f"model {TOKENIZER_FILE} cannot be read ({e}); expected a tokenizer saved with save_pretrained")
            self.tokenizer_file = None
            return None

    def special_tokens(self) -> tuple[bool, bool]:
        """(has BOS, has a document separator) as the corpus loader sees the tokenizer: each prompt
        starts with BOS when there is one; documents are joined with EOS, else BOS."""
        assert self.tokenizer_file is not None
        found: dict[str, bool] = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            try:
                data = json.loads((self.tokenizer_file.parent / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                for token in ("bos_token", "eos_token"):
                    if token in data and token not in found:
                        found[token] = bool(data[token])
        bos, eos = found.get("bos_token", False), found.get("eos_token", False)
        return bos, bos or eos

    def tokens_needed(self, bos: bool) -> tuple[int, str]:
        corpus = self.release.corpus
        per_prompt = corpus.context - 1 if bos else corpus.context
        how = f"{corpus.prompts} prompts x {per_prompt} tokens" + (" after BOS" if bos else "")
        return corpus.prompts * per_prompt, how

    def check_text_corpus(self, reader: _CorpusReader, documents: Iterator[str]) -> None:
        """Documents are joined with one separator token between them and cut into prompts."""
        corpus = self.release.corpus
        tokenizer = self.tokenizer()
        bos, separator = self.special_tokens() if tokenizer is not None else (True, True)
        need, how = self.tokens_needed(bos)
        total = n_docs = 0
        batch: list[str] = []

        def count(batch: list[str]) -> int:
            encoded = tokenizer.encode_batch(batch, add_special_tokens=False)
            return sum(len(e.ids) for e in encoded) + (len(batch) if separator else 0)

        counted_all = True
        for doc in documents:
            n_docs += 1 if doc.strip() else 0
            if tokenizer is None or total > need:
                counted_all = False
                continue  # keep reading: encoding problems later in the file still matter
            batch.append(doc)
            if len(batch) >= _TOKENIZE_BATCH:
                total += count(batch)
                batch = []
        if tokenizer is not None and batch:
            total += count(batch)
        if reader.problems:
            for message in reader.problems:
                self.at(corpus.mark_of("path"), message)
            return
        if n_docs == 0:
            kind = 'lines with "text"' if reader.path.suffix == ".jsonl" else "documents separated by blank lines"
            self.at(corpus.mark_of("path"), f"corpus {reader.path.name} is empty; expected {kind}")
            return
        if counted_all and separator:
            total -= 1  # no separator after the last document
        if tokenizer is not None and total < need:
            self.at(
                corpus.mark_of("prompts"),
                f"corpus {reader.path.name} has {total} tokens; expected at least {need} ({how}): "
                "lower corpus.prompts or corpus.context, or add text",
            )

    def check_jsonl_corpus(self, reader: _CorpusReader) -> None:
        corpus = self.release.corpus
        rows = list(reader.json_lines())
        kinds = [("tokens" if "tokens" in obj else "text", n, obj) for n, obj in rows if isinstance(obj, dict)]
        mode = kinds[0][0] if kinds else None
        texts: list[str] = []
        prompts = 0
        d_vocab = (self.config or {}).get("d_vocab")
        for lineno, obj in rows:
            if not isinstance(obj, dict):
                reader.line_problem(lineno, f"holds a JSON {type(obj).__name__}; expected an object with \"text\" or \"tokens\"")
            elif mode == "tokens":
                tokens = obj.get("tokens")
                if "tokens" not in obj:
                    reader.line_problem(lineno, 'has no "tokens" while earlier lines do; expected every line pre-tokenized or none')
                elif not isinstance(tokens, list) or not all(is_int(t) for t in tokens):
                    reader.line_problem(lineno, '"tokens" is not a list of whole numbers; expected token ids')
                elif any(t < 0 or (is_int(d_vocab) and t >= d_vocab) for t in tokens[: corpus.context]):
                    bad = next(t for t in tokens[: corpus.context] if t < 0 or (is_int(d_vocab) and t >= d_vocab))
                    if is_int(d_vocab):
                        expected = f"ids from 0 to {d_vocab - 1} (the model's d_vocab is {d_vocab})"
                    else:
                        expected = "ids >= 0"
                    reader.line_problem(lineno, f"has the token id {bad}; expected {expected}")
                elif len(tokens) < corpus.context:
                    reader.line_problem(lineno, f"has {len(tokens)} tokens; expected at least corpus.context = {corpus.context}")
                else:
                    prompts += 1
            else:
                text = obj.get("text")
                if "text" not in obj:
                    reader.line_problem(lineno, 'has no "text"; expected {"text": "..."} or {"tokens": [...]} on every line')
                elif not isinstance(text, str):
                    reader.line_problem(lineno, '"text" is not a string; expected {"text": "..."}')
                else:
                    texts.append(text)
        if mode == "tokens":
            for message in reader.problems:
                self.at(corpus.mark_of("path"), message)
            if not rows:
                self.at(corpus.mark_of("path"), f"corpus {reader.path.name} is empty; expected one JSON object per line")
            elif not reader.problems and prompts < corpus.prompts:
                self.at(
                    corpus.mark_of("prompts"),
                    f"corpus {reader.path.name} has {prompts} pre-tokenized prompts; expected at least corpus.prompts = {corpus.prompts}",
                )
            return
        self.check_text_corpus(reader, iter(texts))

    # -- SAEs

    def check_sae(self, spec: SetSpec, sae: SaeSpec, hook_reported: bool) -> bool:
        """Checks one SAE; returns whether the set's hook has been reported (reported once per set)."""
        hook_ok = True
        if self.config is not None:
            n_layers = self.config["n_layers"]
            if sae.layer >= n_layers:
                self.at(sae.mark_of("layer"), f"layer {sae.layer} is outside model '{self.release.model.id}', which has {n_layers} layers; expected 0 to {n_layers - 1}")
                hook_ok = False
            else:
                hook_problem = self.hook_problem(sae.hook)
                if hook_problem is not None:
                    hook_ok = False
                    if not hook_reported:
                        self.at(spec.mark_of("hook"), hook_problem)
                        hook_reported = True
        if sae.path is not None:
            cfg = self.check_local_sae(sae)
            where, mark = f"SAE {SAE_CONFIG}", sae.mark_of("path")
        else:
            cfg = self.check_pretrained_sae(sae)
            where, mark = f"SAELens SAE '{sae.sae_lens.release}/{sae.sae_lens.id}'", sae.mark_of("sae_lens.id")  # type: ignore[union-attr]
        if cfg is not None:
            self.check_sae_config(spec, sae, cfg, hook_ok, where, mark)
        return hook_reported

    def hook_width(self, hook: str) -> int | None:
        """The width of `hook` in the model as the engine runs it (with ENGINE_FLAGS set)."""
        assert self.config is not None
        return hook_width({**self.config, **{flag: True for flag in ENGINE_FLAGS if not (flag == "use_hook_mlp_in" and self.config.get("attn_only"))}}, hook)

    def hook_problem(self, hook: str, what: str = "hook") -> str | None:
        """Why `hook` cannot be read in the model (None when it can): unknown, or firing only behind a flag."""
        assert self.config is not None
        hooks = valid_hooks(self.config)
        if hook in hooks:
            return None
        model_id = self.release.model.id
        flag = hook_needs_flag(self.config, hook)
        if flag in ENGINE_FLAGS:
            return None
        if flag is not None:
            return f"{what} '{hook}' of model '{model_id}' fires only when TransformerLens's {flag} is set, which SAE Atlas does not set; expected a hook that fires by default"
        hint = _suggest(hook, hooks) or "expected a TransformerLens hook name such as blocks.{layer}.hook_resid_pre"
        return f"{what} '{hook}' does not exist in model '{model_id}'; {hint}"

    def check_sae_config(self, spec: SetSpec, sae: SaeSpec, cfg: dict[str, Any], hook_ok: bool, where: str, mark: Mark) -> None:
        """What an SAE's config says against the manifest and the model: architecture, hooks, widths."""
        who = "SAE" if sae.path is not None else where
        name = sae_architecture(cfg)
        info = architecture_info(name)
        if info.refused:
            self.at(mark, f"{where} has architecture '{name}', which SAE Atlas refuses: {info.refused}; expected an SAE of a supported architecture")
            return
        d_in, d_sae, d_out = cfg.get("d_in"), cfg.get("d_sae"), cfg.get("d_out")
        for key, value in (("d_in", d_in), ("d_sae", d_sae)) + ((("d_out", d_out),) if info.transcoder else ()):
            if not is_int(value) or value < 1:
                self.at(mark, f"{where} has {key} = {value!r}; expected a whole number >= 1")
        if is_int(d_sae) and d_sae >= 1:
            self.d_sae[sae.id] = d_sae
        self.check_prepend_bos(cfg, where, mark)
        cfg_hook = sae_hook_name(cfg)
        if cfg_hook is not None and cfg_hook != sae.hook:
            if hook_ok:
                self.at(mark, f"{where} says it reads '{cfg_hook}' but set '{spec.id}' puts it on '{sae.hook}'; expected the same hook (check the layer and the set's hook)")
            return
        if self.check_sae_model(sae, cfg, where, mark) or not hook_ok or self.config is None:
            return  # widths of another model's SAE say nothing new
        head = sae_metadata(cfg, "hook_head_index")
        width = self.config.get("d_head") if is_int(head) else self.hook_width(sae.hook)
        if is_int(head) and head >= self.config.get("n_heads", 0):
            self.at(mark, f"{where} reads head {head} but model '{self.release.model.id}' has {self.config['n_heads']} heads; expected hook_head_index below {self.config['n_heads']}")
        elif is_int(d_in) and is_int(width) and width != d_in:
            reads = f"head {head} of hook '{sae.hook}'" if is_int(head) else f"hook '{sae.hook}'"
            self.at(mark, f"{who} d_in is {d_in} but {reads} of model '{self.release.model.id}' has width {width}; expected d_in = {width}")
        if info.transcoder:
            self.check_transcoder_output(cfg, d_out, who, where, mark)

    def check_prepend_bos(self, cfg: dict[str, Any], where: str, mark: Mark) -> None:
        """A text corpus's BOS as the SAE was trained (SAELens's `prepend_bos`, default true)."""
        problem = prepend_bos_problem(where, sae_prepend_bos(cfg), self.release.corpus)
        if problem is not None:
            self.at(mark, problem)

    def check_transcoder_output(self, cfg: dict[str, Any], d_out: Any, who: str, where: str, mark: Mark) -> None:
        assert self.config is not None
        hook_out = sae_hook_out_name(cfg)
        if hook_out is None:
            self.at(mark, f"{where} is a transcoder ({sae_architecture(cfg)}) without metadata.hook_name_out; expected the hook it writes")
            return
        problem = self.hook_problem(hook_out, "the output hook")
        if problem is not None:
            self.at(mark, f"{where}: {problem}")
            return
        width = self.hook_width(hook_out)
        if is_int(d_out) and is_int(width) and width != d_out:
            self.at(mark, f"{who} d_out is {d_out} but output hook '{hook_out}' of model '{self.release.model.id}' has width {width}; expected d_out = {width}")

    def check_sae_model(self, sae: SaeSpec, cfg: dict[str, Any], where: str, mark: Mark) -> bool:
        """Whether the SAE is for another model than the release's (both resolved to TransformerLens
        names), reported here or as the registry's model."""
        if sae.sae_lens is not None and self.registry_model_reported:
            return True
        model = self.release.model
        theirs = sae_metadata(cfg, "model_name")
        if not model.transformer_lens or not isinstance(theirs, str):
            return False
        ours, official = transformer_lens_official_name(model.transformer_lens), transformer_lens_official_name(theirs)
        if ours is not None and official is not None and ours != official:
            self.at(mark, f"{where} was trained on model '{theirs}' but this release uses '{model.transformer_lens}'; expected SAEs of the release's model")
            return True
        return False

    def check_local_sae(self, sae: SaeSpec) -> dict[str, Any] | None:
        assert sae.path is not None
        mark = sae.mark_of("path")
        cfg: dict[str, Any] | None = None
        if not (sae.path / SAE_CONFIG).is_file():
            self.at(mark, f"SAE directory has no {SAE_CONFIG}; expected a directory written by SAELens save_model")
        else:
            try:
                cfg = read_sae_config(sae)
            except ConfigError as e:
                self.at(mark, f"SAE {e}; expected the {SAE_CONFIG} SAELens save_model writes")
        weights = sae.path / SAE_WEIGHTS
        if not weights.is_file():
            self.at(mark, f"SAE directory has no {SAE_WEIGHTS}; expected a directory written by SAELens save_model")
            return cfg
        try:
            tensors = safetensors_header(weights)
        except ConfigError as e:
            self.at(mark, f"SAE weights: {e}; expected a complete safetensors file")
            return cfg
        w_enc = tensors.get("W_enc")
        d_in, d_sae = (cfg.get("d_in"), cfg.get("d_sae")) if cfg is not None else (None, None)
        if w_enc is not None and is_int(d_in) and is_int(d_sae) and list(w_enc["shape"]) != [d_in, d_sae]:
            self.at(mark, f"SAE W_enc has shape {w_enc['shape']} but {SAE_CONFIG} says d_in={d_in}, d_sae={d_sae}; expected [{d_in}, {d_sae}]")
        return cfg

    def check_pretrained_sae(self, sae: SaeSpec) -> dict[str, Any] | None:
        """Checks a `sae_lens:` reference against SAELens's registry; returns the SAE's config when it can be read."""
        assert sae.sae_lens is not None
        self.registry_model_reported = False
        directory = pretrained_saes_directory()
        if not directory:
            return None  # SAELens not installed here: checked when it loads
        ref = sae.sae_lens
        entry = directory.get(ref.release)
        if entry is None:
            hint = _suggest(ref.release, list(directory)) or "expected a release from SAELens's pretrained_saes.yaml"
            self.at(sae.mark_of("sae_lens.release"), f"'{ref.release}' is not a SAELens release; {hint}")
            return None
        ids = [str(x.get("id")) for x in entry.get("saes") or ()]
        if ref.id not in ids:
            hint = _suggest(ref.id, ids) or f"expected one of the {len(ids)} ids of release '{ref.release}'"
            self.at(sae.mark_of("sae_lens.id"), f"'{ref.id}' is not an SAE of SAELens release '{ref.release}'; {hint}")
            return None
        model = self.release.model
        if model.transformer_lens and entry.get("model"):
            ours = transformer_lens_official_name(model.transformer_lens)
            theirs = transformer_lens_official_name(str(entry["model"])) or str(entry["model"])
            if ours is not None and ours != theirs:
                self.registry_model_reported = True
                self.at(
                    sae.mark_of("sae_lens.release"),
                    f"SAELens release '{ref.release}' is for model '{entry['model']}' but this release uses '{model.transformer_lens}'; expected SAEs of the release's model",
                )
        try:
            cfg = pretrained_sae_config(ref.release, ref.id)
        except HubFileMissing as missing:
            self.hub_missing(missing, sae.mark_of("sae_lens.id"), f"the config of SAELens SAE '{ref.release}/{ref.id}'")
            return None
        except ConfigError as e:
            self.at(sae.mark_of("sae_lens.id"), f"SAELens SAE '{ref.release}/{ref.id}': {e}; expected the config files SAELens reads for it")
            return None
        return cfg

    # -- files on the hub

    def hub_missing(self, missing: HubFileMissing, mark: Mark, what: str) -> None:
        """Collects a hub file that cannot be had; reported once per repo (`_hub_missing_problems`)."""
        if missing.absent:
            self.at(mark, f"{what} needs {missing.filename} of hub repo '{missing.repo_id}': {missing.reason}; expected the file the name refers to")
            return
        found = self.missing.setdefault(missing.repo_id, _MissingRepo(mark, what, missing.reason))
        found.files.extend(f for f in missing.filenames if f not in found.files)

    # -- explanations

    def check_explanations(self, path: Path) -> None:
        mark = self.release.mark_of("explanations")
        if path.is_dir() or detect_format(path) != "atlas":
            self.check_tool_explanations(path, mark)
            return
        reader = _CorpusReader(path)
        sae_ids = {sae.id for sae in self.release.saes()}
        n = 0
        for lineno, obj in reader.json_lines():
            n += 1
            if not isinstance(obj, dict):
                reader.line_problem(lineno, 'is not a JSON object; expected {"sae", "index", "text", "author", "score"}')
                continue
            sae, index, text = obj.get("sae"), obj.get("index"), obj.get("text")
            if sae not in sae_ids:
                hint = _suggest(str(sae), sae_ids) if isinstance(sae, str) else ""
                reader.line_problem(lineno, f"names the SAE {sae!r}, which is not in this release; {hint or 'expected one of ' + ', '.join(sorted(sae_ids))}")
            elif not is_int(index) or index < 0:
                reader.line_problem(lineno, f'has "index" {index!r}; expected a feature index >= 0')
            elif sae in self.d_sae and index >= self.d_sae[sae]:
                reader.line_problem(lineno, f'has "index" {index} but {sae} has {self.d_sae[sae]} features; expected an index below {self.d_sae[sae]}')
            elif not isinstance(text, str) or not text.strip():
                reader.line_problem(lineno, 'has no "text"; expected the explanation as a string')
        for message in reader.problems:
            self.at(mark, message)


    def check_tool_explanations(self, path: Path, mark: Mark) -> None:
        """Neuronpedia's or delphi's explanations: each file's own problems, then SAEs not in the release."""
        try:
            found = load_explanations(path, self.release.saes())
        except InputError as e:
            self.problems.extend(e.problems)
            return
        sae_ids = {sae.id for sae in self.release.saes()}
        for sae in sorted({sae for sae, _ in found} - sae_ids):
            self.at(mark, f"explanations name the SAE {sae!r}, which is not in this release; expected one of {', '.join(sorted(sae_ids))}")


class _CorpusReader:
    """Reads a UTF-8 text or JSON-lines file line by line, collecting line-numbered problems."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []
        self._line_problems = 0

    def line_problem(self, lineno: int, message: str, col: int = 1) -> None:
        self._line_problems += 1
        if self._line_problems <= MAX_LINE_PROBLEMS:
            self.problems.append(f"{self.path.name}:{lineno}:{col} {message}")
        elif self._line_problems == MAX_LINE_PROBLEMS + 1:
            self.problems.append(f"{self.path.name}: more bad lines follow (only the first {MAX_LINE_PROBLEMS} are listed); expected every line valid")

    def lines(self) -> Iterator[tuple[int, str]]:
        try:
            with self.path.open("rb") as f:
                for lineno, raw in enumerate(f, 1):
                    try:
                        yield lineno, raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        self.problems.append(
                            f"{self.path.name}:{lineno}:{e.start + 1} is not UTF-8 (byte 0x{raw[e.start]:02x}); expected UTF-8 text"
                        )
                        return
        except OSError as e:
            self.problems.append(f"cannot read {self.path.name} ({e.strerror}); expected a readable file")

    def text_documents(self) -> Iterator[str]:
        """Documents of a .txt corpus: runs of non-blank lines."""
        doc: list[str] = []
        for _, line in self.lines():
            if line.strip():
                doc.append(line)
            elif doc:
                yield "".join(doc).strip("\n")
                doc = []
        if doc:
            yield "".join(doc).strip("\n")

    def json_lines(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed value) of every non-blank line that is valid JSON."""
        for lineno, line in self.lines():
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                self.line_problem(lineno, f"is not valid JSON ({e.msg}); expected one JSON object per line", e.colno)
