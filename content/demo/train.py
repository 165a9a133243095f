"""Train the tiny-demo release: tokenizer, 2-layer model and four SAEs, from the demo corpus.

    .venv/bin/python content/demo/train.py              # everything (a few minutes on 2 CPU cores)
    .venv/bin/python content/demo/train.py --saes-only  # keep the saved model, retrain the SAEs

Deterministic: fixed seeds and deterministic torch kernels, so a rerun with the same library
versions and the same --threads writes the same weights (CPU reductions depend on the thread count).
"""

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

DEMO = Path(__file__).resolve().parent
CORPUS = DEMO / "corpus" / "moby-dick-and-sotu.txt"
MODEL_DIR = DEMO / "models" / "tiny-2l"
SAE_DIR = DEMO / "saes"
MODEL_NAME = "tiny-2l"
SPECIAL = "<|endoftext|>"

SEED = 0
THREADS = 1  # on a busy 2-core machine one thread beats two; two change the weights slightly
VOCAB_SIZE = 4096
N_CTX = 128
VALIDATION_EVERY = 50  # every 50th window is held out from training

LM_STEPS = 700
LM_BATCH = 32
LM_LR = 3e-3
LM_WARMUP = 50


@dataclass(frozen=True)
class SaeRecipe:
    set_id: str
    hook: str  # with {layer}
    architecture: str  # "standard" (L1) or "topk"
    d_sae: int = 1024
    k: int = 32  # topk only
    l1: float = 3.0  # standard only: coefficient of sum(f * |W_dec|), inputs at mean |x|^2 = d_in
    steps: int = 500
    batch: int = 4096
    lr: float = 1e-3


RECIPES = [
    SaeRecipe("res", "blocks.{layer}.hook_resid_post", "topk"),
    SaeRecipe("mlp", "blocks.{layer}.hook_mlp_out", "standard", l1=3.0, steps=800, lr=3e-3),
]
LAYERS = [0, 1]


def log(message: str, started: float) -> None:
    print(f"[{time.time() - started:6.1f}s] {message}", flush=True)


def read_documents() -> list[str]:
    return [d for d in CORPUS.read_text(encoding="utf-8").split("\n\n") if d.strip()]


# Tokenizer ---------------------------------------------------------------------------------

def train_tokenizer(documents: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE, so every string round-trips; <|endoftext|> is BOS, EOS, UNK and PAD."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        unk_token=SPECIAL,
        pad_token=SPECIAL,
    )


def token_windows(tokenizer: PreTrainedTokenizerFast, documents: list[str]) -> torch.Tensor:
    """Documents joined by <|endoftext|>, cut into windows of BOS + (N_CTX - 1) tokens."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream += ids + [eos]
    body = N_CTX - 1
    n = len(stream) // body
    windows = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    return torch.cat([torch.full((n, 1), tokenizer.bos_token_id), windows], dim=1)


def split(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    held_out = torch.zeros(len(windows), dtype=torch.bool)
    held_out[VALIDATION_EVERY - 1 :: VALIDATION_EVERY] = True
    return windows[~held_out], windows[held_out]


# Model -------------------------------------------------------------------------------------

def model_config() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        model_name=MODEL_NAME,
        n_layers=2,
        d_model=128,
        n_heads=4,
        d_head=32,
        d_mlp=512,
        n_ctx=N_CTX,
        d_vocab=VOCAB_SIZE,
        act_fn="gelu",
        normalization_type="LN",
        tokenizer_name=None,
        seed=SEED,
    )


def config_json(cfg: HookedTransformerConfig) -> dict:
    """The JSON-serialisable HookedTransformerConfig fields; device and dtype are the loader's choice."""
    out = {}
    for key, value in cfg.to_dict().items():
        if key in ("device", "dtype"):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        json.dumps(value)  # fails loudly on anything not serialisable
        out[key] = value
    return out


@torch.no_grad()
def mean_loss(model: HookedTransformer, windows: torch.Tensor, batch: int = 64) -> float:
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        total += model(chunk, return_type="loss").item() * len(chunk)
        count += len(chunk)
    return total / count


def train_model(train: torch.Tensor, validation: torch.Tensor, started: float) -> HookedTransformer:
    model = HookedTransformer(model_config())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LM_LR,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < LM_WARMUP:
            return (step + 1) / LM_WARMUP
        progress = (step - LM_WARMUP) / max(1, LM_STEPS - LM_WARMUP)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(train), generator=generator)
    cursor = 0
    model.train()
    for step in range(LM_STEPS):
        if cursor + LM_BATCH > len(order):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        batch = train[order[cursor : cursor + LM_BATCH]]
        cursor += LM_BATCH
        loss = model(batch, return_type="loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0 or step == LM_STEPS - 1:
            log(f"lm step {step:4d} loss {loss.item():.3f}", started)
    model.eval()
    return model


def save_model(model: HookedTransformer, tokenizer: PreTrainedTokenizerFast) -> None:
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(MODEL_DIR)
    # The class name that transformers 4 and 5 both resolve (5 alone knows "TokenizersBackend").
    tokenizer_config = MODEL_DIR / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(settings, indent=2) + "\n")
    (MODEL_DIR / "config.json").write_text(json.dumps(config_json(model.cfg), indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, MODEL_DIR / "model.safetensors", metadata={"format": "pt"})


def load_model() -> HookedTransformer:
    """Load the saved directory the way a reader of the format would."""
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    known = HookedTransformerConfig.__dataclass_fields__
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg.items() if k in known})
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.load_state_dict(load_file(MODEL_DIR / "model.safetensors"), strict=True)
    model.eval()
    return model


# SAEs --------------------------------------------------------------------------------------

@torch.no_grad()
def collect_activations(model: HookedTransformer, windows: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    out = {h: torch.empty(len(windows) * N_CTX, model.cfg.d_model) for h in hooks}
    batch = 64
    for i in range(0, len(windows), batch):
        _, cache = model.run_with_cache(windows[i : i + batch], names_filter=lambda name: name in out)
        for h in hooks:
            acts = cache[h].reshape(-1, model.cfg.d_model)
            out[h][i * N_CTX : i * N_CTX + len(acts)] = acts
    return out


def new_sae(recipe: SaeRecipe, layer: int, d_in: int):
    metadata = SAEMetadata(
        model_name=MODEL_NAME,
        hook_name=recipe.hook.format(layer=layer),
        hook_head_index=None,
        prepend_bos=True,
        context_size=N_CTX,
        dataset_path=f"corpus/{CORPUS.name}",
        model_class_name="HookedTransformer",
        model_from_pretrained_kwargs={},
        exclude_special_tokens=False,
    )
    if recipe.architecture == "topk":
        cfg = TopKSAEConfig(d_in=d_in, d_sae=recipe.d_sae, k=recipe.k, metadata=metadata)
        return TopKSAE(cfg)
    return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=recipe.d_sae, metadata=metadata))


@torch.no_grad()
def initialise(sae, sample: torch.Tensor, decoder_norm: float) -> None:
    generator = torch.Generator().manual_seed(SEED)
    w_dec = torch.randn(sae.cfg.d_sae, sae.cfg.d_in, generator=generator)
    w_dec *= decoder_norm / w_dec.norm(dim=1, keepdim=True)
    sae.W_dec.copy_(w_dec)
    sae.W_enc.copy_(w_dec.T)
    sae.b_enc.zero_()
    sae.b_dec.copy_(sample.mean(dim=0))


@torch.no_grad()
def unscale(sae, factor: float) -> None:
    """Turn an SAE trained on x / factor into the same SAE on x: same latents, same reconstruction."""
    sae.W_enc /= factor
    sae.W_dec *= factor
    sae.b_dec *= factor


@torch.no_grad()
def evaluate(sae, acts: torch.Tensor, batch: int = 8192) -> dict:
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    l0, squared_error = 0.0, 0.0
    for i in range(0, len(acts), batch):
        x = acts[i : i + batch]
        f = sae.encode(x)
        squared_error += (sae.decode(f) - x).pow(2).sum().item()
        fired += (f > 0).sum(dim=0)
        l0 += (f > 0).sum().item()
    variance = (acts - acts.mean(dim=0)).pow(2).sum().item()
    return {
        "explained_variance": round(1 - squared_error / variance, 4),
        "l0": round(l0 / len(acts), 2),
        "dead": int((fired == 0).sum()),
    }


def train_sae(recipe: SaeRecipe, layer: int, acts: torch.Tensor, started: float):
    """Train on activations rescaled to a mean squared norm of d_in, so one recipe fits every hook."""
    torch.manual_seed(SEED)
    sae = new_sae(recipe, layer, acts.shape[1])
    generator = torch.Generator().manual_seed(SEED + layer)
    factor = (acts[:65536].pow(2).sum(dim=1).mean() / acts.shape[1]).sqrt().item()
    topk = recipe.architecture == "topk"
    initialise(sae, acts[:65536] / factor, decoder_norm=1.0 if topk else 0.1)
    optimizer = torch.optim.Adam(sae.parameters(), lr=recipe.lr, betas=(0.9, 0.999))
    steps_since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    order = torch.randperm(len(acts), generator=generator)
    cursor = 0
    for step in range(recipe.steps):
        if cursor + recipe.batch > len(order):
            order, cursor = torch.randperm(len(acts), generator=generator), 0
        x = acts[order[cursor : cursor + recipe.batch]] / factor
        cursor += recipe.batch
        lr_scale = min(1.0, 5 * (1 - step / recipe.steps))  # linear decay over the last 20%
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * lr_scale
        if topk:
            mse, penalty = topk_loss(sae, x, steps_since_fired)
        else:
            warm = min(1.0, step / (0.1 * recipe.steps))
            mse, penalty = l1_loss(sae, x, recipe.l1 * warm, steps_since_fired)
        optimizer.zero_grad(set_to_none=True)
        (mse + penalty).backward()
        optimizer.step()
        if topk:
            with torch.no_grad():
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        if step % 100 == 0 or step == recipe.steps - 1:
            fraction = mse.item() / x.pow(2).sum(dim=1).mean().item()
            log(f"sae {layer}-{recipe.set_id} step {step:4d} mse/|x|^2 {fraction:.4f} penalty {penalty.item():.4f}", started)
    unscale(sae, factor)
    if not topk:
        sae.fold_W_dec_norm()
    return sae


def l1_loss(sae, x, l1: float, steps_since_fired) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error plus l1 * sum(f * |W_dec row|) (decoder norms stay free, folded in at the end)."""
    f = sae.encode(x)
    mse = (sae.decode(f) - x).pow(2).sum(dim=1).mean()
    track_firing(f, steps_since_fired)
    return mse, l1 * (f * sae.W_dec.norm(dim=1)).sum(dim=1).mean()


def topk_loss(sae, x, steps_since_fired, dead_after: int = 100, k_aux: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error plus the AuxK loss: the top dead latents reconstruct the remaining error."""
    pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc  # what TopKSAE.encode computes
    f = sae.activation_fn(pre)
    reconstruction = sae.decode(f)
    mse = (reconstruction - x).pow(2).sum(dim=1).mean()
    track_firing(f, steps_since_fired)
    dead = steps_since_fired > dead_after
    if not dead.any():
        return mse, torch.zeros(())
    values, indices = pre.masked_fill(~dead, float("-inf")).topk(min(k_aux, int(dead.sum())), dim=1)
    aux = torch.zeros_like(pre).scatter(1, indices, values.relu())
    error = (x - reconstruction).detach()
    return mse, (aux @ sae.W_dec - error).pow(2).sum(dim=1).mean() / 32


@torch.no_grad()
def track_firing(f: torch.Tensor, steps_since_fired: torch.Tensor) -> None:
    fired = (f > 0).any(dim=0)
    steps_since_fired += 1
    steps_since_fired[fired] = 0


def train_saes(model: HookedTransformer, train: torch.Tensor, validation: torch.Tensor, started: float) -> dict:
    hooks = [r.hook.format(layer=layer) for r in RECIPES for layer in LAYERS]
    train_acts = collect_activations(model, train, hooks)
    validation_acts = collect_activations(model, validation, hooks)
    log(f"activations: {len(train) * N_CTX} train and {len(validation) * N_CTX} held-out tokens", started)
    report = {}
    for recipe in RECIPES:
        for layer in LAYERS:
            hook = recipe.hook.format(layer=layer)
            sae = train_sae(recipe, layer, train_acts[hook], started)
            path = SAE_DIR / recipe.set_id / str(layer)
            sae.save_model(path)
            reloaded = SAE.load_from_disk(path)
            assert reloaded.cfg.metadata.hook_name == hook
            assert reloaded.cfg.metadata.model_name == MODEL_NAME
            stats = evaluate(reloaded, validation_acts[hook])
            report[f"{MODEL_NAME}@{layer}-{recipe.set_id}"] = {"architecture": recipe.architecture, **stats}
            log(f"{MODEL_NAME}@{layer}-{recipe.set_id}: {stats}", started)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes-only", action="store_true", help="reuse the saved tokenizer and model")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default {THREADS})")
    args = parser.parse_args()

    started = time.time()
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    documents = read_documents()
    if args.saes_only:
        tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    else:
        tokenizer = train_tokenizer(documents)
        sample = documents[0] + " ünïcödé ✓"
        assert tokenizer.decode(tokenizer(sample)["input_ids"]) == sample
        log(f"tokenizer: {len(tokenizer)} tokens", started)
    train, validation = split(token_windows(tokenizer, documents))
    log(f"{len(train)} train and {len(validation)} held-out windows of {N_CTX} tokens", started)

    if not args.saes_only:
        model = train_model(train, validation, started)
        trained_loss = mean_loss(model, validation)
        save_model(model, tokenizer)
    model = load_model()
    loss = mean_loss(model, validation)
    if not args.saes_only:
        assert abs(loss - trained_loss) < 1e-5, (loss, trained_loss)
    assert model.to_tokens("Call me Ishmael.")[0, 0].item() == tokenizer.bos_token_id
    log(f"model: held-out loss {loss:.4f} nats/token (reloaded)", started)

    report = {"model": {"held_out_loss": round(loss, 4)}, "saes": train_saes(model, train, validation, started)}
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
