"""What the engine does with each SAE architecture SAELens registers, torch-free.

`check` refuses an SAE whose architecture is refused here (naming it and why) before any weights
load; the engine reads `kind` and `skip` to know where the SAE writes and what its reconstruction is.
A test lists SAELens's own registry at run time and requires every registered architecture to be
either supported here (and checked by brute force) or refused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    name: str
    transcoder: bool = False  # reads one hook, writes another (cfg.d_out, metadata.hook_name_out)
    skip: bool = False  # reconstruction adds W_skip @ x to decode(encode(x))
    refused: str | None = None  # why the engine cannot compute it; None when supported


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("standard"),
        Architecture("gated"),
        Architecture("topk"),
        Architecture(
            "abstopk",
            refused="its activations can be negative, and SAE Atlas's statistics, examples and sparse "
            "reconstruction are of positive activations",
        ),
        Architecture("jumprelu"),
        Architecture("matching_pursuit"),
        Architecture("transcoder", transcoder=True),
        Architecture("skip_transcoder", transcoder=True, skip=True),
        Architecture("jumprelu_transcoder", transcoder=True),
        Architecture("jumprelu_skip_transcoder", transcoder=True, skip=True),
        Architecture(
            "temporal",
            refused="its reconstruction adds codes predicted from earlier positions (forward), which "
            "per-token decode(encode(x)) statistics do not model",
        ),
    )
}


def architecture_info(name: str) -> Architecture:
    """The entry for `name`; an architecture this table does not know is refused."""
    return ARCHITECTURES.get(name) or Architecture(
        name, refused="SAE Atlas does not know this architecture yet (known: " + ", ".join(sorted(a for a, v in ARCHITECTURES.items() if not v.refused)) + ")"
    )
