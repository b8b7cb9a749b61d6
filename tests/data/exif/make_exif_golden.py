"""Writes the tiny EXIF-tagged JPEGs of this folder (16x16, Pillow only): run from the repo root.

dive/a.jpg: DateTimeOriginal 2019:05:02 13:04:05, SubSecTimeOriginal 250, OffsetTimeOriginal
            +10:00; 43 deg 07' 12.36" S, 147 deg 19' 48.36" E; GPSAltitude 35.5 with
            GPSAltitudeRef 1 (below sea level); GPSImgDirection 350.0 (T)
dive/b.jpg: DateTimeOriginal 2019:05:02 13:04:07 without an offset; 43 deg 07' 12.72" S,
            147 deg 19' 48.72" E; GPSAltitude 2.0, GPSAltitudeRef 0 (above sea level)
dive/c.jpg: DateTimeOriginal only, no GPS IFD
"""

from fractions import Fraction
from pathlib import Path

from PIL import Image

OUT = Path(__file__).parent / "dive"
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def rational(x: float) -> Fraction:
    return Fraction(x).limit_denominator(10000)


def write(name: str, exif_tags: dict, gps_tags: dict | None) -> None:
    exif = Image.Exif()
    exif[0x0110] = "golden"  # Model, so IFD0 is never empty
    exif[EXIF_IFD] = exif_tags
    if gps_tags:
        exif[GPS_IFD] = gps_tags
    OUT.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (40, 90, 120)).save(OUT / name, "JPEG", exif=exif, quality=50)


def dms(deg: int, minutes: int, seconds: float) -> tuple:
    return (rational(deg), rational(minutes), rational(seconds))


if __name__ == "__main__":
    write("a.jpg", {0x9003: "2019:05:02 13:04:05", 0x9291: "250", 0x9011: "+10:00"},
          {1: "S", 2: dms(43, 7, 12.36), 3: "E", 4: dms(147, 19, 48.36), 5: b"\x01",
           6: rational(35.5), 16: "T", 17: rational(350.0)})
    write("b.jpg", {0x9003: "2019:05:02 13:04:07"},
          {1: "S", 2: dms(43, 7, 12.72), 3: "E", 4: dms(147, 19, 48.72), 5: b"\x00",
           6: rational(2.0)})
    write("c.jpg", {0x9003: "2019:05:02 13:04:09"}, None)
