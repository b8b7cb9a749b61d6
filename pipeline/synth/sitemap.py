"""site.png: the habitat map with every dive's track."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .seabed import HABITATS

HABITAT_COLOURS = ("#e8d9a8", "#c9b27a", "#9a948a", "#6b4f4f", "#4f8a3a", "#d9772b")
# benchmark preset (mixture.BENCHMARK_HABITATS)
BENCHMARK_COLOURS = ("#e8d9a8", "#f4f0e0", "#9a948a", "#d9772b", "#6b4f4f", "#3e3a44",
                     "#7a6a20", "#4f8a3a")


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
    habitats = getattr(seabed, "habitats", HABITATS)
    colours = HABITAT_COLOURS if habitats == HABITATS else BENCHMARK_COLOURS
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    ax.imshow(hab, origin="lower", extent=(-half, half, -half, half),
              cmap=ListedColormap(colours), vmin=-0.5, vmax=len(habitats) - 0.5)
    track_colours = plt.cm.tab10(np.arange(len(dive_records)) % 10)
    handles = [Patch(color=c, label=h.replace("_", " ")) for h, c in zip(habitats, colours, strict=True)]
    for rec, colour in zip(dive_records, track_colours, strict=True):
        tr = rec["true_img"]
        plan = rec["plan"]
        label = f"{plan.name} ({rec['format']})"
        if plan.revisits:
            label += f", revisits {plan.revisits}"
        (line,) = ax.plot(tr.x, tr.y, "-", color=colour, lw=1.2, label=label)
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
