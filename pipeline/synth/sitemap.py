"""site.png: the habitat map with every dive's track.

Habitat colours come from the project's one palette, ``ssl/palette.py``, so a habitat has the
same colour here as in the evaluation's maps. It is loaded as ``seafloor_ssl.palette`` where the
project is installed, or straight from the checkout's ``ssl/palette.py`` where it is not (as
``pipeline/schema.py`` loads the manifest contract).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..schema import load_trainer_module
from .seabed import HABITATS

palette = load_trainer_module("palette")


def habitat_colour_list(habitats) -> list[str]:
    """The palette's colour of each habitat, in the seabed's class order (class index i is
    drawn in entry i)."""
    colours = palette.habitat_colours(habitats)
    return [colours[str(h)] for h in habitats]


def draw_site_map(path: Path, seabed, frame, dive_records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    half = 150.0
    xs = np.arange(-half, half, 1.5) + 0.75
    gx, gy = np.meshgrid(xs, xs)
    hab = seabed.habitat(gx, gy)
    habitats = tuple(getattr(seabed, "habitats", HABITATS))
    colours = habitat_colour_list(habitats)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    ax.imshow(hab, origin="lower", extent=(-half, half, -half, half),
              cmap=ListedColormap(colours), vmin=-0.5, vmax=len(habitats) - 0.5)
    from matplotlib import patheffects

    # tracks in dark, saturated colours with a white edge, readable over any habitat colour
    track_colours = ["#1f3b8c", "#b0006a", "#000000", "#5b2a86", "#006d6f", "#8c1c13"]
    halo = [patheffects.Stroke(linewidth=3.2, foreground="white"), patheffects.Normal()]
    handles = [Patch(color=c, label=h.replace("_", " ")) for h, c in zip(habitats, colours, strict=True)]
    for k, rec in enumerate(dive_records):
        colour = track_colours[k % len(track_colours)]
        tr = rec["true_img"]
        plan = rec["plan"]
        label = f"{plan.name} ({rec['format']})"
        if plan.revisits:
            label += f", revisits {plan.revisits}"
        (line,) = ax.plot(tr.x, tr.y, "-", color=colour, lw=1.3, label=label,
                          path_effects=halo)
        handles.append(line)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_xlabel(f"metres east of E {frame.e0:.0f} (EPSG:{frame.epsg})")
    ax.set_ylabel(f"metres north of N {frame.n0:.0f}")
    ax.set_title("Synthetic survey: habitat map and AUV tracks")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
