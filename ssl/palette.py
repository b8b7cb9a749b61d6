"""One habitat palette for every figure of the project.

A habitat keeps its colour wherever it is drawn: the synthetic site's truth map (``site.png``),
the evaluation maps and bars (``map_true.png``, ``map_pred.png``, ``per_class_f1.png``,
``embedding_2d.png``) and the cluster / prediction maps, so a reader can compare figures side by
side without reading each legend. Names are matched after :func:`habitat_key` ("Rippled sand",
"rippled-sand" and "rippled_sand" are one habitat).

- :data:`KNOWN`: a fixed colour for every habitat of the synthetic presets and a few common
  real-world seafloor classes; sand reads pale, rock and reef dark, vegetation green.
- :func:`habitat_colours`: colours for any set of names; names outside :data:`KNOWN` get
  colours from :data:`EXTRA` (none of them in :data:`KNOWN`), by sorted key, so the same label
  set gets the same colours in every figure whatever the order the names come in.
- :func:`cluster_colours`: colours for unnamed clusters 0..k-1.
- :data:`UNLABELLED`: the grey of unlabelled / untested points; :func:`to_rgb` for code that
  needs floats.

Standard library only: the pipeline loads this file without matplotlib, numpy or torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CLUSTER", "EXTRA", "KNOWN", "UNLABELLED", "cluster_colours", "habitat_colours",
           "habitat_key", "to_rgb"]

UNLABELLED = "#c8c8c8"
"""Grey for unlabelled or untested points (not a habitat; distinct from every palette colour)."""

KNOWN: dict[str, str] = {
    # sediments: pale to mid
    "sand": "#ecdcaa",
    "rippled_sand": "#c4a465",
    "shell_hash_sand": "#fbf6ea",
    "gravel": "#9a9184",
    "mud": "#806a4c",
    # hard ground: dark
    "rock": "#4d4843",
    "boulder_field": "#676380",
    "reef": "#7e4640",
    # fauna
    "coral": "#e8748a",
    "sponge_garden": "#e07b24",
    # vegetation: greens (kelp olive-brown, as brown algae are)
    "seagrass": "#5a9a3c",
    "seagrass_meadow": "#2a6630",
    "kelp_forest": "#7a6a20",
    "algae": "#a8cf5a",
    # catch-alls
    "unknown": "#161616",
    "other": "#b9a7d6",
}
"""Fixed colour per habitat key: every habitat of the synthetic presets (``seabed.HABITATS``,
``mixture.BENCHMARK_HABITATS``) and a few common real-world classes. All pairwise distinct."""

EXTRA: tuple[str, ...] = (
    "#1f77b4", "#17becf", "#9467bd", "#d62728", "#e377c2", "#0b2f7a", "#00897b", "#f032e6",
    "#ffe119", "#aaffc3", "#7b1fa2",
)
"""Qualitative colours for habitat names outside :data:`KNOWN` (blues, purples, reds: no
seafloor habitat colour), handed out in sorted order of the unknown keys, then cycled."""

CLUSTER: tuple[str, ...] = (
    "#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#008856", "#e68fac",
    "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17", "#8db600",
    "#654522", "#e25822", "#2b3d26", "#222222",
)
"""Colours of unnamed clusters: Kelly's colours of maximum contrast without white and grey
(white vanishes on the page, grey is :data:`UNLABELLED`), in Kelly's order."""

_SEPARATORS = re.compile(r"[\s\-]+")
_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def habitat_key(name: str) -> str:
    """The lookup form of a habitat name: lower case, stripped, every run of spaces and hyphens
    one underscore ("Rippled sand" -> "rippled_sand")."""
    return _SEPARATORS.sub("_", str(name).strip().lower())


def _is_blank(name) -> bool:
    if name is None:
        return True
    if isinstance(name, float) and name != name:  # NaN: a missing label in a table
        return True
    return habitat_key(name) == ""


def habitat_colours(names: Iterable[str]) -> dict[str, str]:
    """``{name: "#rrggbb"}`` for a collection of habitat names.

    Names may come in any order and repeat; None, NaN and blank names are left out. A name whose
    :func:`habitat_key` is in :data:`KNOWN` gets that colour; the other keys, sorted, get
    :data:`EXTRA` colours in turn (cycled when there are more of them than colours), so a label
    set gets the same colours however it is ordered. The keys of the result are the caller's
    spellings (``str`` of the name), every spelling of one key with the same colour, ordered as
    the sorted unique names.
    """
    spelled = sorted({str(n) for n in names if not _is_blank(n)})
    unknown = sorted({habitat_key(n) for n in spelled} - KNOWN.keys())
    extra = {k: EXTRA[i % len(EXTRA)] for i, k in enumerate(unknown)}
    return {n: KNOWN.get(habitat_key(n)) or extra[habitat_key(n)] for n in spelled}


def cluster_colours(k: int) -> list[str]:
    """Colours of clusters 0..k-1 (no names): the first ``k`` of :data:`CLUSTER`, all distinct
    up to 20 clusters, cycled beyond; none of them :data:`UNLABELLED`."""
    return [CLUSTER[i % len(CLUSTER)] for i in range(max(0, int(k)))]


def to_rgb(hex: str) -> tuple[float, float, float]:
    """``"#rrggbb"`` (or ``"#rgb"``, ``#`` optional) as (r, g, b) floats in [0, 1]."""
    m = _HEX.fullmatch(hex.strip())
    if m is None:
        raise ValueError(f"not a hex colour: {hex!r}")
    digits = m.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    r, g, b = (int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    return r, g, b
