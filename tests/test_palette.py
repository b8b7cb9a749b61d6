"""The one habitat palette: same habitat, same colour, in every figure."""

from __future__ import annotations

import itertools
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image
from seafloor_ssl import palette
from seafloor_ssl.evaluation.report import class_colours
from seafloor_ssl.palette import (
    EXTRA,
    KNOWN,
    UNLABELLED,
    cluster_colours,
    habitat_colours,
    habitat_key,
    to_rgb,
)

from pipeline.schema import load_trainer_module
from pipeline.synth import sitemap
from pipeline.synth.mixture import BENCHMARK_HABITATS, MixtureSeabed
from pipeline.synth.seabed import HABITATS, Seabed

SYNTH = (HABITATS, BENCHMARK_HABITATS)


def _distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.subtract(to_rgb(a), to_rgb(b))))


def test_habitat_key_normalises():
    assert habitat_key("Rippled sand") == "rippled_sand"
    assert habitat_key("  Shell-hash SAND ") == "shell_hash_sand"
    assert habitat_key("sponge_garden") == "sponge_garden"
    assert habitat_key("kelp - forest") == "kelp_forest"


def test_every_synthetic_habitat_is_known_and_same_in_both_presets():
    for habitats in SYNTH:
        assert set(habitats) <= set(KNOWN)
        assert habitat_colours(habitats) == {h: KNOWN[h] for h in sorted(habitats)}
    # the default preset's colours, written out (site.png's legend)
    assert habitat_colours(HABITATS) == {
        "gravel": "#9a9184", "reef": "#7e4640", "rippled_sand": "#c4a465", "sand": "#ecdcaa",
        "seagrass": "#5a9a3c", "sponge_garden": "#e07b24"}
    default, benchmark = (habitat_colours(h) for h in SYNTH)
    shared = set(HABITATS) & set(BENCHMARK_HABITATS)
    assert shared == {"sand", "gravel", "reef", "sponge_garden"}
    assert all(default[h] == benchmark[h] for h in shared)
    assert sitemap.habitat_colour_list(HABITATS) == [KNOWN[h] for h in HABITATS]
    assert sitemap.habitat_colour_list(BENCHMARK_HABITATS) == [KNOWN[h] for h in BENCHMARK_HABITATS]


def test_key_variants_share_the_known_colour():
    got = habitat_colours(["Rippled sand", "rippled-sand", "RIPPLED_SAND", "rippled_sand"])
    assert list(got) == sorted(got)  # the caller's spellings, sorted
    assert set(got.values()) == {KNOWN["rippled_sand"]}
    assert habitat_colours(["Sponge Garden"]) == {"Sponge Garden": KNOWN["sponge_garden"]}


def test_palette_colours_valid_and_pairwise_distinct():
    named = list(KNOWN.values()) + list(EXTRA) + [UNLABELLED]
    for c in named + cluster_colours(20):
        assert all(0.0 <= v <= 1.0 for v in to_rgb(c))
        assert to_rgba(c)  # matplotlib reads it
    assert len(set(KNOWN.values())) == len(KNOWN)
    assert not set(EXTRA) & set(KNOWN.values())
    # distinguishable, not merely different hex strings
    assert min(_distance(a, b) for a, b in itertools.combinations(named, 2)) > 0.08
    clusters = cluster_colours(20)
    assert len(set(clusters)) == 20 and UNLABELLED not in clusters
    assert min(_distance(a, b) for a, b in itertools.combinations(clusters, 2)) > 0.08
    assert cluster_colours(20) == clusters and cluster_colours(5) == clusters[:5]
    assert cluster_colours(0) == []
    # Kelly's colours of maximum contrast in his order, white and grey left out: vivid yellow,
    # strong purple, vivid orange, very light blue
    assert cluster_colours(4) == ["#f3c300", "#875692", "#f38400", "#a1caf1"]
    assert cluster_colours(45) == [clusters[i % 20] for i in range(45)]  # cycles, no error


def test_to_rgb():
    assert to_rgb("#ffffff") == (1.0, 1.0, 1.0)
    assert to_rgb("000") == (0.0, 0.0, 0.0)
    assert to_rgb(UNLABELLED) == pytest.approx((200 / 255,) * 3)
    with pytest.raises(ValueError):
        to_rgb("grey")


def test_habitat_colours_order_independent_and_unknown_names_distinct():
    names = ["sand", "Mystery mat", "bacterial_mat", "zz other thing", "reef", "anemone bed"]
    base = habitat_colours(names)
    rng = random.Random(0)
    for _ in range(10):
        shuffled = names * 2 + [None, "", "  ", float("nan")]
        rng.shuffle(shuffled)
        got = habitat_colours(shuffled)
        assert got == base and list(got) == list(base) == sorted(names)
    unknown = [base[n] for n in names if habitat_key(n) not in KNOWN]
    assert len(unknown) == 4 and len(set(unknown)) == 4
    assert not set(unknown) & set(KNOWN.values())
    assert UNLABELLED not in unknown
    assert base["sand"] == KNOWN["sand"] and base["reef"] == KNOWN["reef"]
    # an unknown name's colour does not depend on which known names come with it
    alone = [n for n in names if habitat_key(n) not in KNOWN]
    assert habitat_colours(alone) == {n: base[n] for n in sorted(alone)}


def test_more_unknown_names_than_extra_colours_cycle():
    names = [f"class {i:02d}" for i in range(len(EXTRA) + 5)]
    got = habitat_colours(names)
    assert [got[n] for n in names] == [EXTRA[i % len(EXTRA)] for i in range(len(names))]
    assert habitat_colours([]) == {} and habitat_colours([None, ""]) == {}


def test_report_class_colours_agree_with_palette():
    classes = list(BENCHMARK_HABITATS) + ["Unknown", "bacterial_mat"]
    got = class_colours(classes)
    assert list(got) == classes  # the caller's order, for the legends
    # the known answer, written out: each class's fixed palette colour, and the one name outside
    # the palette ("bacterial_mat") the first EXTRA colour
    assert got == {
        "sand": "#ecdcaa", "shell_hash_sand": "#fbf6ea", "gravel": "#9a9184",
        "sponge_garden": "#e07b24", "reef": "#7e4640", "boulder_field": "#676380",
        "kelp_forest": "#7a6a20", "seagrass_meadow": "#2a6630", "Unknown": "#161616",
        "bacterial_mat": "#1f77b4",
    }
    assert got["reef"] == KNOWN["reef"] and got["Unknown"] == KNOWN["unknown"]
    assert got["bacterial_mat"] == EXTRA[0]
    assert class_colours(list(reversed(classes))) == got  # same colours whatever the order
    for c in got.values():
        to_rgba(c)


def test_sitemap_loads_palette_from_the_checkout(monkeypatch):
    """Without the installed package the pipeline reads ``ssl/palette.py`` itself."""
    monkeypatch.setitem(sys.modules, "seafloor_ssl", None)
    monkeypatch.setitem(sys.modules, "seafloor_ssl.palette", None)
    monkeypatch.delitem(sys.modules, "_seafloor_pipeline_palette", raising=False)
    module = load_trainer_module("palette")
    assert module.__name__ == "_seafloor_pipeline_palette"
    assert module.KNOWN == palette.KNOWN


@pytest.mark.parametrize("make", [Seabed, MixtureSeabed], ids=["default", "benchmark"])
def test_site_map_draws_with_palette_colours(make, tmp_path):
    seabed = make(0)
    frame = SimpleNamespace(e0=500000.0, n0=6000000.0, epsg=32755)
    t = np.linspace(-100, 100, 50)
    dive = {"true_img": SimpleNamespace(x=t, y=0.5 * t),
            "plan": SimpleNamespace(name="dive01", revisits=None), "format": "acfr"}
    path = tmp_path / "site.png"
    sitemap.draw_site_map(path, seabed, frame, [dive])
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    seen = {tuple(p) for p in np.unique(pixels, axis=0)}
    xs = np.arange(-150, 150, 1.5) + 0.75
    gx, gy = np.meshgrid(xs, xs)
    habitats = getattr(seabed, "habitats", HABITATS)
    counts = np.bincount(seabed.habitat(gx, gy).ravel(), minlength=len(habitats))
    for h, n in zip(habitats, counts, strict=True):
        if n > 0.01 * counts.sum():  # a habitat with area on the map shows its palette colour
            rgb = tuple(int(round(v * 255)) for v in to_rgb(KNOWN[h]))
            assert rgb in seen, h
