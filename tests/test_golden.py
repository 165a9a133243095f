"""The rendered site of a tiny synthetic release equals the committed expected output."""

import difflib

from tests.golden import EXPECTED, render_golden, site_files


def test_rendered_site_matches_the_committed_golden_output(tmp_path):
    site = tmp_path / "site"
    render_golden(site)
    actual = site_files(site)
    expected = site_files(EXPECTED)
    assert sorted(actual) == sorted(expected), "file list changed; run `make golden` if intended"
    for rel in expected:
        if actual[rel] != expected[rel]:
            diff = "\n".join(
                difflib.unified_diff(
                    expected[rel].decode("utf-8", "replace").splitlines(),
                    actual[rel].decode("utf-8", "replace").splitlines(),
                    f"expected/{rel}", f"actual/{rel}", lineterm="", n=2,
                )
            )
            raise AssertionError(f"{rel} differs (run `make golden` if intended):\n{diff[:4000]}")
