"""What init says about a file no reader recognised: which column it looked for per role, which
it found, the nearest names in the header, and the ``columns:`` map to write."""

from __future__ import annotations

import json

from .scan import Unrecognised

_ROLE_WORDS = {"time": "time", "lat": "latitude", "lon": "longitude", "depth": "depth",
               "altitude": "altitude", "heading": "heading", "image": "image path"}
_NEEDED = ("time", "lat", "lon")  # a position needs these; depth as the readers say


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def roles_to_fill(u: Unrecognised) -> list[str]:
    """Roles the column map still needs, in the catalog's key order."""
    s = u.sniff
    if s is None:
        return list(_NEEDED) + ["depth"]
    wanted = set(s.candidates) | {r for r in _NEEDED if r not in s.found}
    wanted |= {r for r, word in _ROLE_WORDS.items()
               if r not in s.found and any(f" {word} " in f" {m} " or f" {r} " in f" {m} "
                                           for m in s.missing)}
    return [r for r in _ROLE_WORDS if r in wanted]


def explain(u: Unrecognised, template: str | None, indent: str = "    ") -> list[str]:
    """Lines for the report: what was looked for and found, and the nav source to write."""
    s = u.sniff
    head = f"CSV not recognised as navigation: {u.rel}"
    if s is None:
        return [head + " (no header row the readers could read)"]
    lines = [head + (f" ({s.note})" if s.note else "")]
    for m in s.missing:
        lines.append(f"{indent}missing   {m}")
    if s.found:
        lines.append(f"{indent}found     " + ", ".join(f"{r}: {c!r}" for r, c in s.found.items()))
    for role, names in s.candidates.items():
        if names:
            lines.append(f"{indent}nearest   {role}: " + ", ".join(repr(n) for n in names))
    fill = roles_to_fill(u)
    lines.append(f"{indent}to use it, add this nav source (replace each <...> with a column "
                 "name of the file):")
    lines.append(f"{indent}  - format: csv")
    lines.append(f"{indent}    path: {_q(template or u.rel)}")
    lines.append(f"{indent}    columns:")
    known = dict(s.columns or {})  # a partial map the reader guessed (time: [Date, Time] ...)
    for role, name in s.found.items():
        if role in _ROLE_WORDS:
            known.setdefault(role, name)
    for role in _ROLE_WORDS:
        if role in known:
            lines.append(f"{indent}      {role}: {_q(known.pop(role))}")
        elif role in fill:
            hint = s.candidates.get(role)
            lines.append(f"{indent}      {role}: {_q('<' + _ROLE_WORDS[role] + ' column>')}"
                         + (f"  # nearest: {', '.join(hint)}" if hint else ""))
    if "depth" not in fill and "depth" not in s.found and (s.columns or {}).get("depth") is None:
        lines.append(f"{indent}      # depth: \"<depth column>\"  (optional: without it depth "
                     "is unknown)")
    for key, value in known.items():  # units and options: time_unit, delimiter ...
        lines.append(f"{indent}      {key}: {_q(value)}")
    if "xy_crs" in s.candidates or any("xy_crs" in m for m in s.missing):
        lines.append(f"{indent}      xy_crs: \"<EPSG code of easting/northing, e.g. EPSG:32755>\"")
    if "time" in fill:
        lines.append(f"{indent}      # time_unit: unix_s (default), unix_ms or iso8601; or "
                     "time_format: \"%d/%m/%Y %H:%M:%S\"")
    return lines
