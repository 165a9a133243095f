"""`sae-atlas deploy` against local repositories: a bare `remote.git` and a user repository whose `origin` is it.

Every deploy runs the command line in a subprocess from the user repository, as a user would. Git runs with
an identity and without the machine's global or system configuration, so the tests pass on a clean machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import sae_atlas

# A small rendered site: a `_`-prefixed file, a nested dir, CRLF text, binary bytes, a name git would ignore.
SITE_FILES = {
    "index.html": b"<!doctype html><title>Atlas</title>\n",
    "search-index.js": b'AtlasData.search({"docs":[{"id":"release:demo-release","kind":"release"},{"id":"model:m","kind":"model"}]});\n',
    "_static/app.js": b"console.log('underscore dirs need .nojekyll');\r\n",
    "gpt2-small/9-res-jb/index.html": b"<p>SAE page</p>\r\n<p>CRLF kept</p>\r\n",
    "gpt2-small/9-res-jb/data/_features.bin": bytes(range(256)) * 4,
    "debug.log": b"ignored by info/exclude, deployed anyway\n",
}


@dataclass(frozen=True)
class Repos:
    user: Path
    remote: Path
    site: Path
    env: dict[str, str]

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=cwd or self.user, env={**os.environ, **self.env}, capture_output=True, text=True)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def deploy(self, *args: object, cwd: Path | None = None):
        return sae_atlas("deploy", *args, cwd=cwd or self.user, env=self.env, timeout=120)

    def remote_refs(self) -> str:
        return self.git("for-each-ref", "--format=%(refname) %(objectname)", cwd=self.remote)

    def remote_tip(self, branch: str = "gh-pages") -> str:
        return self.git("rev-parse", f"refs/heads/{branch}", cwd=self.remote)


def _git_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    return {
        "GIT_AUTHOR_NAME": "Ada Researcher",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada Researcher",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
        "GIT_CONFIG_GLOBAL": str(empty),
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def write_site(site: Path, files: dict[str, bytes] = SITE_FILES) -> None:
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    env = _git_env(tmp_path)
    user, remote = tmp_path / "project", tmp_path / "remote.git"
    r = Repos(user, remote, user / "build" / "site", env)
    r.git("init", "--quiet", "--bare", str(remote), cwd=tmp_path)
    r.git("init", "--quiet", str(user), cwd=tmp_path)
    (user / "README.md").write_text("# my SAEs\n")
    (user / ".gitignore").write_text("build/\n")
    r.git("add", "README.md", ".gitignore")
    r.git("commit", "--quiet", "-m", "first")
    r.git("remote", "add", "origin", str(remote))
    r.git("config", "core.autocrlf", "true")  # deploy must not convert line endings
    (user / ".git" / "info" / "exclude").write_text("*.log\n")  # nor drop ignored names
    write_site(r.site)
    return r


def tree_of(r: Repos, ref: str, cwd: Path) -> dict[str, bytes]:
    listing = r.git("ls-tree", "-r", "--format=%(objectname) %(path)", ref, cwd=cwd).splitlines()
    out = {}
    for line in listing:
        blob, path = line.split(" ", 1)
        out[path] = subprocess.run(["git", "cat-file", "blob", blob], cwd=cwd, capture_output=True, check=True).stdout
    return out


def snapshot(r: Repos) -> dict[str, object]:
    """What the user has: status, HEAD, current branch, staged diff, the index file and every work tree file."""
    paths = []
    for folder, dirs, names in os.walk(r.user):
        dirs[:] = [d for d in dirs if d != ".git"]
        paths += [Path(folder, name) for name in names]
    files = hashlib.sha256()
    for path in sorted(paths):
        files.update(str(path.relative_to(r.user)).encode() + b"\0" + path.read_bytes() + oct(path.stat().st_mode).encode())
    return {
        "status": r.git("--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "head": r.git("rev-parse", "HEAD"),
        "branch": r.git("symbolic-ref", "HEAD"),
        "staged": r.git("diff", "--cached"),
        "index": hashlib.sha256((r.user / ".git" / "index").read_bytes()).hexdigest(),
        "files": files.hexdigest(),
    }


def test_deploy_pushes_exactly_the_site_files_plus_nojekyll(repos: Repos):
    run = repos.deploy()
    assert run.returncode == 0, run.stderr
    published = tree_of(repos, "refs/heads/gh-pages", repos.remote)
    assert published == {**SITE_FILES, ".nojekyll": b""}  # same paths, byte-identical contents
    assert not (repos.site / ".nojekyll").exists()  # added in the commit only
    assert repos.git("rev-parse", "refs/heads/gh-pages") == repos.remote_tip()
    source = repos.git("rev-parse", "--short", "HEAD")
    assert repos.git("log", "-1", "--format=%s", "gh-pages") == f"Deploy site: demo-release from {source}"
    last = run.stderr.strip().splitlines()[-1]
    assert f"deployed {len(SITE_FILES) + 1} files" in last and repos.remote_tip()[:12] in last and "pushed to origin" in last


def test_second_deploy_adds_one_commit_on_top_even_when_unchanged(repos: Repos):
    assert repos.deploy().returncode == 0
    first = repos.remote_tip()
    again = repos.deploy()
    assert again.returncode == 0, again.stderr
    second = repos.remote_tip()
    assert repos.git("rev-list", "--parents", "gh-pages", cwd=repos.remote).splitlines() == [f"{second} {first}", first]
    assert repos.git("rev-parse", f"{second}^{{tree}}", cwd=repos.remote) == repos.git("rev-parse", f"{first}^{{tree}}", cwd=repos.remote)

    (repos.site / "index.html").write_bytes(b"<p>new</p>\n")
    (repos.site / "debug.log").unlink()
    assert repos.deploy("--message", "Publish v2").returncode == 0
    third = repos.remote_tip()
    assert repos.git("rev-parse", f"{third}^", cwd=repos.remote) == second
    assert repos.git("log", "-1", "--format=%B", third, cwd=repos.remote) == "Publish v2"
    expected = {**SITE_FILES, "index.html": b"<p>new</p>\n", ".nojekyll": b""}
    del expected["debug.log"]
    assert tree_of(repos, third, repos.remote) == expected


def test_working_tree_index_and_head_are_unchanged(repos: Repos):
    (repos.user / "README.md").write_text("# my SAEs\nunstaged edit\n")
    (repos.user / "notes.txt").write_text("staged, not committed\n")
    repos.git("add", "notes.txt")
    (repos.user / "scratch.txt").write_text("untracked\n")
    before = snapshot(repos)
    assert repos.deploy().returncode == 0
    assert repos.deploy().returncode == 0
    assert snapshot(repos) == before


def test_remote_ahead_is_fetched_and_built_upon_without_force(repos: Repos, tmp_path: Path):
    assert repos.deploy().returncode == 0
    other = tmp_path / "other-clone"  # a second machine deploys (e.g. CI)
    repos.git("clone", "--quiet", str(repos.remote), str(other), cwd=tmp_path)
    write_site(other / "build" / "site", {"index.html": b"from CI\n"})
    assert repos.deploy(cwd=other).returncode == 0
    ci_commit = repos.remote_tip()

    run = repos.deploy()
    assert run.returncode == 0, run.stderr
    tip = repos.remote_tip()
    assert repos.git("rev-parse", f"{tip}^", cwd=repos.remote) == ci_commit
    assert repos.git("rev-parse", "refs/heads/gh-pages") == tip
    assert tree_of(repos, tip, repos.remote) == {**SITE_FILES, ".nojekyll": b""}


def test_diverged_branch_is_refused_and_nothing_is_pushed(repos: Repos, tmp_path: Path):
    assert repos.deploy().returncode == 0
    other = tmp_path / "other-clone"
    repos.git("clone", "--quiet", str(repos.remote), str(other), cwd=tmp_path)
    write_site(other / "build" / "site", {"index.html": b"from CI\n"})
    assert repos.deploy(cwd=other).returncode == 0
    assert repos.deploy("--no-push").returncode == 0  # a local-only commit on the old tip
    local, remote_refs = repos.git("rev-parse", "gh-pages"), repos.remote_refs()

    run = repos.deploy()
    assert run.returncode == 2
    assert "diverged" in run.stderr and "Traceback" not in run.stderr
    assert repos.remote_refs() == remote_refs and repos.git("rev-parse", "gh-pages") == local


def test_no_push_commits_on_the_local_branch_only(repos: Repos):
    run = repos.deploy("--no-push", "--branch", "site")
    assert run.returncode == 0, run.stderr
    assert repos.remote_refs() == ""
    assert set(tree_of(repos, "refs/heads/site", repos.user)) == {*SITE_FILES, ".nojekyll"}
    assert "not pushed" in run.stderr


def _refusal_cases(r: Repos, tmp_path: Path) -> dict[str, tuple[tuple, Path, str]]:
    empty = tmp_path / "empty-site"
    empty.mkdir()
    (empty / "sub").mkdir()
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    return {
        "site over the total limit": (("--max-site-size", "1K"), r.user, "GitHub Pages publishes sites up to 1.0 KiB"),
        "file over the file limit": (("--max-file-size", "512"), r.user, "_features.bin is 1.0 KiB; GitHub refuses files over 512 B"),
        "missing site": (("--site", "no-such-dir"), r.user, "no site in no-such-dir; run `sae-atlas build` first"),
        "empty site": (("--site", empty), r.user, "is empty; run `sae-atlas build` first"),
        "not a repository": (("--site", r.site), elsewhere, "is not inside a git repository"),
        "unknown remote": (("--remote", "upstream"), r.user, "no remote 'upstream' in this repository"),
        "branch checked out": (("--branch", r.git("branch", "--show-current")), r.user, "is the branch checked out here"),
    }


@pytest.mark.parametrize(
    "case",
    ["site over the total limit", "file over the file limit", "missing site", "empty site", "not a repository", "unknown remote", "branch checked out"],
)
def test_refusals_exit_2_with_one_line_and_commit_nothing(repos: Repos, tmp_path: Path, case: str):
    assert repos.deploy().returncode == 0  # the remote already holds a deploy, which must stay as it is
    remote_refs, local_refs, before = repos.remote_refs(), repos.git("for-each-ref"), snapshot(repos)
    args, cwd, expected = _refusal_cases(repos, tmp_path)[case]
    run = repos.deploy(*args, cwd=cwd)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and expected in run.stderr, run.stderr
    assert repos.remote_refs() == remote_refs and repos.git("for-each-ref") == local_refs
    assert snapshot(repos) == before


def test_limits_are_module_constants(repos: Repos, monkeypatch: pytest.MonkeyPatch):
    from sae_atlas import deploy

    monkeypatch.setattr(deploy, "FILE_LIMIT", 100)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", repos.env["GIT_CONFIG_GLOBAL"])
    with pytest.raises(deploy.DeployRefused, match="_features.bin is 1.0 KiB"):
        deploy.deploy_site(deploy.DeployOptions(site=repos.site, repo=repos.user))
    monkeypatch.setattr(deploy, "FILE_LIMIT", 10**9)
    monkeypatch.setattr(deploy, "SITE_LIMIT", 1000)
    with pytest.raises(deploy.DeployRefused, match="publishes sites up to 1000 B"):
        deploy.deploy_site(deploy.DeployOptions(site=repos.site, repo=repos.user))
    assert repos.remote_refs() == ""


def test_rejected_push_leaves_the_local_branch_as_it_was(repos: Repos):
    hook = repos.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pages are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    run = repos.deploy()
    assert run.returncode == 1
    assert "push to 'origin' failed: [remote rejected]" in run.stderr and "Traceback" not in run.stderr
    assert repos.remote_refs() == "" and repos.git("for-each-ref", "refs/heads/gh-pages") == ""
