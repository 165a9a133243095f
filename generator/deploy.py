"""deploy: publish the rendered site as one commit on top of a branch (default gh-pages) and push it.

Contract:
- The user's working tree, index, HEAD and current branch are never touched. The commit is built with git
  plumbing: blobs hashed straight from the site directory (no filters, no ignore rules), entered into a
  temporary index (GIT_INDEX_FILE in a temp dir), `write-tree`, `commit-tree`. The push names that commit;
  the local branch moves (`update-ref`, compare-and-swap) only once the push has succeeded.
- The commit's tree is exactly the site's regular files plus an empty `.nojekyll` at its root (added in the
  commit only; the site directory is never written), so GitHub Pages serves files starting with `_`.
- Every deploy adds exactly one commit whose parent is the branch tip, also when the site is unchanged (like
  `mkdocs gh-deploy`: the commit records which source commit was deployed and triggers a Pages rebuild).
- When the remote branch is ahead of the local one it is fetched and the commit goes on top of it; the push
  is never forced. Local and remote branches that have diverged are refused.
- Refusals raise `DeployRefused` (exit 2) before anything is written: no site directory or an empty one, a file
  over FILE_LIMIT, a site over SITE_LIMIT, not a git repository, an unknown remote, an invalid branch name, the
  branch checked out here, a diverged branch.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sae_atlas.errors import AtlasError

FILE_LIMIT = 100 * 2**20  # GitHub rejects pushes of files over 100 MiB
SITE_LIMIT = 2**30  # GitHub Pages publishes sites up to 1 GB
NOJEKYLL = b".nojekyll"
_SEARCH_INDEX = "search-index.js"
_SEARCH_CALL = b"AtlasData.search("  # the wrapper render writes around the search documents


class DeployRefused(AtlasError):
    """A deploy that would publish something GitHub refuses, or cannot start. Nothing was written. Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class DeployOptions:
    site: Path = Path("build/site")
    branch: str = "gh-pages"
    remote: str = "origin"
    message: str | None = None  # default: "Deploy site: RELEASES from COMMIT"
    push: bool = True
    repo: Path = Path(".")  # any directory inside the user's repository
    site_limit: int | None = None  # default SITE_LIMIT
    file_limit: int | None = None  # default FILE_LIMIT


@dataclass(frozen=True)
class SiteFile:
    path: bytes  # relative to the site root, '/'-separated
    source: Path
    size: int
    executable: bool


@dataclass(frozen=True)
class DeployReport:
    commit: str
    parent: str | None
    branch: str
    files: int  # including .nojekyll
    bytes: int
    pushed_to: str | None  # the remote's URL; None with --no-push


class _GitFailed(Exception):
    def __init__(self, args: tuple[str, ...], stderr: str):
        self.args_run, self.stderr = args, stderr
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        rejected = [line.lstrip("! ") for line in lines if line.startswith("! [")]  # push: the ref and why
        errors = [line for line in lines if line.startswith(("fatal:", "error:"))]  # git's own reason, not its hints
        super().__init__((rejected or errors or lines or [f"git {' '.join(args)} failed"])[0])


def _git(repo: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, input=stdin, capture_output=True, env={**os.environ, **(env or {})}
        )
    except FileNotFoundError:
        raise AtlasError("git is not installed (or not on PATH); deploy needs it") from None
    if done.returncode not in ok:
        raise _GitFailed(args, done.stderr.decode(errors="replace"))
    return done.stdout


def _text(out: bytes) -> str:
    return out.decode().strip()


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def scan_site(site: Path) -> list[SiteFile]:
    """Every regular file under `site` (symlinks followed, `.git` skipped), sorted by path."""
    if not site.exists():
        raise DeployRefused(f"no site in {site}; run `sae-atlas build` first (or pass --site DIR)")
    if not site.is_dir():
        raise DeployRefused(f"{site} is not a directory; expected the rendered site (pass --site DIR)")
    root = os.fsencode(site)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != b".git"]  # git cannot store a `.git` inside a tree
        for name in names:
            full = os.path.join(folder, name)
            try:
                st = os.stat(full)
            except OSError:
                continue  # a dangling symlink: nothing to serve
            if stat.S_ISREG(st.st_mode) and name != b".git":
                rel = os.path.relpath(full, root).replace(os.sep.encode(), b"/")
                files.append(SiteFile(rel, Path(os.fsdecode(full)), st.st_size, bool(st.st_mode & stat.S_IXUSR)))
    if not files:
        raise DeployRefused(f"the site {site} is empty; run `sae-atlas build` first (or pass --site DIR)")
    return sorted(files, key=lambda f: f.path)


def check_limits(files: list[SiteFile], site: Path, site_limit: int, file_limit: int) -> None:
    """Refuse what GitHub would refuse: a file over `file_limit`, a site over `site_limit` bytes."""
    largest = max(files, key=lambda f: f.size)
    over = [f for f in files if f.size > file_limit]
    if over:
        more = f" ({len(over)} files are over it)" if len(over) > 1 else ""
        raise DeployRefused(
            f"{largest.source} is {human_size(largest.size)}; GitHub refuses files over {human_size(file_limit)}{more}; nothing was deployed"
        )
    total = sum(f.size for f in files)
    if total > site_limit:
        raise DeployRefused(
            f"the site {site} holds {human_size(total)} in {len(files):,} files; GitHub Pages publishes sites up to "
            f"{human_size(site_limit)} (largest file: {largest.source}, {human_size(largest.size)}); nothing was deployed"
        )


def release_ids(site: Path) -> list[str]:
    """The releases in the site's search index; [] when the site has none or another shape."""
    try:
        raw = (site / _SEARCH_INDEX).read_bytes().strip()
        docs = json.loads(raw.removeprefix(_SEARCH_CALL).removesuffix(b";").removesuffix(b")"))["docs"]
        return [d["id"].removeprefix("release:") for d in docs if d.get("kind") == "release"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _quote(path: bytes) -> bytes:
    """C-style quoting, as `git hash-object --stdin-paths` unquotes (any byte may be in a file name)."""
    escaped = path.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return b'"' + escaped + b'"'


def build_tree(repo: Path, files: list[SiteFile]) -> str:
    """Write the blobs and the tree of `files` + `.nojekyll` into the repository; return the tree id."""
    sources = b"".join(_quote(os.fsencode(f.source.absolute())) + b"\n" for f in files)
    blobs = _text(_git(repo, "hash-object", "-w", "--no-filters", "--stdin-paths", stdin=sources)).split()
    entries = [(b"100755" if f.executable else b"100644", blob.encode(), f.path) for f, blob in zip(files, blobs, strict=True)]
    if not any(f.path == NOJEKYLL for f in files):
        empty = _text(_git(repo, "hash-object", "-w", "--stdin", stdin=b""))
        entries.append((b"100644", empty.encode(), NOJEKYLL))
    index_info = b"".join(mode + b" " + blob + b"\t" + path + b"\0" for mode, blob, path in entries)
    with tempfile.TemporaryDirectory(prefix="sae-atlas-deploy-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp, "index"))}  # the user's index is never read or written
        _git(repo, "update-index", "-z", "--index-info", stdin=index_info, env=env)
        return _text(_git(repo, "write-tree", env=env))


def _commit_of(repo: Path, ref: str) -> str | None:
    return _text(_git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", ok=(0, 1))) or None


def _is_ancestor(repo: Path, a: str, b: str) -> bool:
    done = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=repo, capture_output=True)
    return done.returncode == 0


def _check_repository(repo: Path, options: DeployOptions) -> None:
    try:
        _git(repo, "rev-parse", "--git-dir")
    except _GitFailed:
        raise DeployRefused(f"{repo.absolute()} is not inside a git repository; deploy from your project's repository (or `git init` it)") from None
    try:
        _git(repo, "check-ref-format", f"refs/heads/{options.branch}")
    except _GitFailed:
        raise DeployRefused(f"{options.branch!r} is not a valid branch name; pass --branch NAME") from None
    head = _text(_git(repo, "symbolic-ref", "--quiet", "HEAD", ok=(0, 1)))
    if head == f"refs/heads/{options.branch}":
        raise DeployRefused(f"{options.branch} is the branch checked out here; switch to your source branch, then deploy")


def _remote_url(repo: Path, remote: str) -> str:
    try:
        return _text(_git(repo, "remote", "get-url", remote))
    except _GitFailed:
        raise DeployRefused(f"no remote {remote!r} in this repository; add it (`git remote add {remote} URL`), pass --remote NAME, or use --no-push") from None


def _remote_tip(repo: Path, options: DeployOptions) -> str | None:
    """The remote branch's commit, fetched when the local repository lacks it; None if the remote has no such branch."""
    ref = f"refs/heads/{options.branch}"
    try:
        listing = _text(_git(repo, "ls-remote", "--exit-code", options.remote, ref, ok=(0, 2)))
    except _GitFailed as e:
        raise AtlasError(f"cannot reach the remote {options.remote!r}: {e}; nothing was deployed") from None
    tip = next((line.split()[0] for line in listing.splitlines() if line.split()[1:] == [ref]), None)
    if tip is not None and _commit_of(repo, tip) is None:
        try:
            _git(repo, "fetch", "--quiet", "--no-tags", options.remote, ref)
        except _GitFailed as e:
            raise AtlasError(f"fetching {options.branch} from {options.remote!r} failed: {e}; nothing was deployed") from None
    return tip


def _parent(repo: Path, options: DeployOptions, local: str | None, remote: str | None) -> str | None:
    """The commit to build on: the further ahead of the local and the remote tip; diverged tips are refused."""
    if remote is None or remote == local:
        return local
    if local is None or _is_ancestor(repo, local, remote):
        return remote
    if _is_ancestor(repo, remote, local):
        return local
    raise DeployRefused(
        f"the local {options.branch} and {options.remote}/{options.branch} have diverged; keep the published one with "
        f"`git branch -f {options.branch} {options.remote}/{options.branch}` (after `git fetch {options.remote}`), then deploy again"
    )


def default_message(repo: Path, site: Path) -> str:
    releases = ", ".join(release_ids(site))
    source = _commit_of(repo, "HEAD")
    short = _text(_git(repo, "rev-parse", "--short", source)) if source else None
    head = "Deploy site" + (f": {releases}" if releases else "") + (f" from {short}" if short else "")
    return head + (f"\n\nBuilt from {source} with `sae-atlas deploy`.\n" if source else "\n")


def _commit(repo: Path, tree: str, parent: str | None, message: str) -> str:
    parents = ["-p", parent] if parent else []
    try:
        return _text(_git(repo, "commit-tree", tree, *parents, "-F", "-", stdin=message.encode()))
    except _GitFailed as e:
        raise AtlasError(f"git could not make the deploy commit: {e} (are `git config user.name` and `user.email` set?); nothing was deployed") from None


def _publish(repo: Path, options: DeployOptions, commit: str, local: str | None) -> None:
    ref = f"refs/heads/{options.branch}"
    if options.push:
        try:
            _git(repo, "push", "--quiet", options.remote, f"{commit}:{ref}")
        except _GitFailed as e:
            raise AtlasError(f"push to {options.remote!r} failed: {e}; the local {options.branch} is unchanged, deploy again once the remote accepts pushes") from None
    try:
        _git(repo, "update-ref", "-m", "sae-atlas deploy", ref, commit, local or "")
    except _GitFailed as e:
        raise AtlasError(f"moving the local {options.branch} to {commit[:12]} failed: {e}") from None


def _without_credentials(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)  # a token in an https remote must not reach CI logs


def deploy_site(options: DeployOptions) -> DeployReport:
    """Commit `options.site` on top of `options.branch` and push it to `options.remote` (see the module contract)."""
    repo, site = Path(options.repo), Path(options.site)
    _check_repository(repo, options)
    files = scan_site(site)
    site_limit = SITE_LIMIT if options.site_limit is None else options.site_limit  # read at call time: tests lower them
    check_limits(files, site, site_limit, FILE_LIMIT if options.file_limit is None else options.file_limit)
    url = _remote_url(repo, options.remote) if options.push else None
    local = _commit_of(repo, f"refs/heads/{options.branch}")
    parent = _parent(repo, options, local, _remote_tip(repo, options) if options.push else None)
    total = sum(f.size for f in files)
    n_files = len(files) + (not any(f.path == NOJEKYLL for f in files))
    print(f"sae-atlas: deploying {n_files:,} files ({human_size(total)}) from {site} onto {options.branch}", file=sys.stderr)
    try:
        tree = build_tree(repo, files)
    except _GitFailed as e:
        raise AtlasError(f"git could not store the site's files: {e}; nothing was deployed") from None
    commit = _commit(repo, tree, parent, options.message or default_message(repo, site))
    _publish(repo, options, commit, local)
    where = f"pushed to {options.remote} ({_without_credentials(url)})" if url else f"not pushed (`git push {options.remote} {options.branch}` publishes it)"
    print(f"sae-atlas: deployed {n_files:,} files ({human_size(total)}) as commit {commit[:12]} on {options.branch}, {where}", file=sys.stderr)
    return DeployReport(commit, parent, options.branch, n_files, total, url)
