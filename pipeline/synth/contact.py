"""contact_sheet.png: per habitat, a row of images from different dives and altitudes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

THUMB_PX = (160, 120)
PER_ROW = 8
LABEL_PX = 150


def pick_examples(truth, habitat: str, n: int = PER_ROW) -> list[str]:
    """Image ids labelled ``habitat``, spread over dives first, then over altitude."""
    rows = truth[truth["label"] == habitat].sort_values("altitude_m")
    if rows.empty:
        return []
    picks: list[str] = []
    by_dive = [g for _, g in rows.groupby("dive")]
    # round-robin over dives, each dive's images taken at spread-out altitude quantiles
    quantiles = np.linspace(0, 1, max(1, -(-n // len(by_dive))))
    for q in quantiles:
        for g in by_dive:
            if len(picks) < n:
                picks.append(g["image_id"].iloc[int(round(q * (len(g) - 1)))])
    return list(dict.fromkeys(picks))


def draw_contact_sheet(path: Path, out: Path, seabed) -> None:
    """Write the contact sheet for the survey in ``out`` (reads truth.csv and the images)."""
    import pandas as pd
    from PIL import Image, ImageDraw

    truth = pd.read_csv(out / "truth.csv")
    habitats = list(getattr(seabed, "habitats", sorted(truth["label"].dropna().unique())))
    w, h = THUMB_PX
    sheet = Image.new("RGB", (LABEL_PX + PER_ROW * (w + 2), len(habitats) * (h + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, habitat in enumerate(habitats):
        top = r * (h + 2)
        count = int((truth["label"] == habitat).sum())
        draw.text((4, top + h // 2 - 12), f"{habitat}\n{count} images", fill="black")
        for c, image_id in enumerate(pick_examples(truth, habitat)):
            try:
                with Image.open(out / image_id) as im:
                    thumb = im.convert("RGB").resize(THUMB_PX)
            except OSError:  # a file fault (truncated, empty) in a --faults survey
                continue
            sheet.paste(thumb, (LABEL_PX + c * (w + 2), top))
    sheet.save(path)
