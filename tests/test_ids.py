"""SAE and feature ids, and the site's URL paths (generator/ids.py)."""

from __future__ import annotations

import posixpath

import pytest

from sae_atlas.ids import (
    SLUG,
    SaeId,
    feature_path,
    home_path,
    parse_feature_id,
    parse_sae_id,
    relative,
    release_path,
    sae_path,
    set_path,
)


def test_parse_sae_id_splits_model_layer_and_set():
    assert parse_sae_id("gpt2-small@9-res-jb") == SaeId("gpt2-small", 9, "res-jb")


def test_sae_id_round_trips_through_str_and_slug():
    sae = SaeId("p70d", 3, "res-sm")
    assert str(sae) == "p70d@3-res-sm"
    assert sae.slug == "3-res-sm"
    assert parse_sae_id(str(sae)) == sae


def test_set_id_may_contain_digits_dots_and_dashes():
    assert parse_sae_id("m.1@12-res_v2-4k") == SaeId("m.1", 12, "res_v2-4k")


@pytest.mark.parametrize(
    "text",
    ["", "gpt2-small", "gpt2-small@res-jb", "gpt2-small@-1-res", "Gpt2@1-res", "gpt2@1-", "@1-res", "gpt2@x-res", "gpt2@1-res:3"],
)
def test_malformed_sae_ids_are_rejected_with_the_expected_form(text):
    with pytest.raises(ValueError, match="expected MODEL@LAYER-SET"):
        parse_sae_id(text)


def test_parse_feature_id_returns_sae_and_index():
    assert parse_feature_id("gpt2-small@9-res-jb:123") == (SaeId("gpt2-small", 9, "res-jb"), 123)


@pytest.mark.parametrize("text", ["gpt2-small@9-res-jb", "gpt2-small@9-res-jb:", "gpt2-small@9-res-jb:-1", "gpt2-small@9-res-jb:x", ":3"])
def test_malformed_feature_ids_are_rejected(text):
    with pytest.raises(ValueError):
        parse_feature_id(text)


def test_feature_id_with_bad_sae_part_names_the_sae_form():
    with pytest.raises(ValueError, match="MODEL@LAYER-SET"):
        parse_feature_id("nonsense:4")


@pytest.mark.parametrize("slug", ["a", "gpt2-small", "res_jb.v2", "0-x"])
def test_slug_accepts_lowercase_ids(slug):
    assert SLUG.match(slug)


@pytest.mark.parametrize("slug", ["", "-a", ".a", "A", "a b", "a/b", "é"])
def test_slug_rejects_other_ids(slug):
    assert not SLUG.match(slug)


def test_slug_rejects_a_trailing_newline():
    assert not SLUG.match("a\n")


def test_sae_id_with_a_trailing_newline_is_rejected():
    with pytest.raises(ValueError):
        parse_sae_id("m@1-s\n")


def test_site_paths_name_html_files():
    sae = SaeId("gpt2-small", 9, "res-jb")
    assert home_path() == "index.html"
    assert release_path("p70d-sm") == "p70d-sm/index.html"
    assert set_path("gpt2-small", "res-jb") == "gpt2-small/res-jb/index.html"
    assert sae_path(sae) == "gpt2-small/9-res-jb/index.html"
    assert feature_path(sae, 42) == "gpt2-small/9-res-jb/index.html#42"


@pytest.mark.parametrize(
    "from_page, to_path, expected",
    [
        ("index.html", "p70d-sm/index.html", "p70d-sm/index.html"),
        ("p70d-sm/index.html", "index.html", "../index.html"),
        ("gpt2-small/9-res-jb/index.html", "gpt2-small/res-jb/index.html", "../../gpt2-small/res-jb/index.html"),
        ("gpt2-small/9-res-jb/index.html", "static/style.css", "../../static/style.css"),
    ],
)
def test_relative_links_climb_to_the_root(from_page, to_path, expected):
    assert relative(from_page, to_path) == expected


@pytest.mark.parametrize(
    "from_page",
    ["index.html", "rel/index.html", "gpt2-small/res-jb/index.html", "gpt2-small/9-res-jb/index.html"],
)
def test_relative_link_resolves_to_the_target_from_any_page(from_page):
    target = sae_path(SaeId("gpt2-small", 9, "res-jb"))
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(from_page), relative(from_page, target)))
    assert resolved == target


def test_relative_feature_link_keeps_the_fragment():
    sae = SaeId("m", 0, "s")
    assert relative("m/s/index.html", feature_path(sae, 7)) == "../../m/0-s/index.html#7"
