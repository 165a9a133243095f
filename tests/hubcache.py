"""A Hugging Face hub cache laid out by a test, in the hub's own layout, for loading by name offline.

    hub = HubCache(tmp_path / "hf")                     # HF_HOME; the cache is hub/ inside it
    hub.add("gpt2", "config.json", json_bytes)           # models--gpt2/{blobs,refs,snapshots}/...
    hub.add("org/corpus", "data/train.jsonl", b"...", repo_type="dataset")
    env = hub.env()                                      # HF_HOME, HF_HUB_OFFLINE=1, ...

Files go where `huggingface_hub` writes them: the content under `blobs/<sha256>`, `refs/main`
naming a commit, and `snapshots/<commit>/<path>` a relative symlink to the blob. Every repo gets one
commit hash derived from its name, so the same calls give the same tree.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_TYPES = {"model": "models", "dataset": "datasets", "space": "spaces"}


class HubCache:
    def __init__(self, hf_home: Path):
        self.hf_home = Path(hf_home)
        self.hub = self.hf_home / "hub"
        self.hub.mkdir(parents=True, exist_ok=True)

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        return self.hub / f"{REPO_TYPES[repo_type]}--{repo_id.replace('/', '--')}"

    @staticmethod
    def commit_of(repo_id: str, repo_type: str = "model") -> str:
        return hashlib.sha1(f"{repo_type}:{repo_id}".encode()).hexdigest()

    def add(self, repo_id: str, path: str, data: bytes, repo_type: str = "model") -> Path:
        """Put `data` at `path` of the repo's main revision; returns the snapshot path."""
        repo = self.repo_dir(repo_id, repo_type)
        commit = self.commit_of(repo_id, repo_type)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        target = repo / "snapshots" / commit / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(os.path.relpath(blob, target.parent))
        return target

    def add_file(self, repo_id: str, path: str, source: Path, repo_type: str = "model") -> Path:
        return self.add(repo_id, path, Path(source).read_bytes(), repo_type)

    def add_dir(self, repo_id: str, prefix: str, source: Path, repo_type: str = "model") -> None:
        """Every file under `source` at `prefix/<relative path>` of the repo."""
        source = Path(source)
        for p in sorted(source.rglob("*")):
            if p.is_file():
                rel = p.relative_to(source).as_posix()
                self.add(repo_id, f"{prefix}/{rel}" if prefix else rel, p.read_bytes(), repo_type)

    def env(self) -> dict[str, str]:
        """Environment variables that point every hub client at this cache, offline."""
        return {
            "HF_HOME": str(self.hf_home),
            "HF_HUB_CACHE": str(self.hub),
            "HF_DATASETS_CACHE": str(self.hf_home / "datasets"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
