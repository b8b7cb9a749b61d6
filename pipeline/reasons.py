"""Quarantine reason codes: why an input image did not reach locations.parquet.

The synthetic survey's faults.json and the pipeline's quarantine table use the same codes.
"""

DECODE_ERROR = "decode_error"  # the image file does not decode (truncated or corrupt)
EMPTY_FILE = "empty_file"  # zero bytes on disk
OUTSIDE_NAV_SPAN = "outside_nav_span"  # image time before the first or after the last nav sample
NO_NAV = "no_nav"  # inside the navigation time span but no pose for this image
NAV_GAP = "nav_gap"  # nearest navigation samples further apart than max_interp_gap_s
NAV_INVALID = "nav_invalid"  # the image's pose has NaN / missing coordinates
NAV_JUMP = "nav_jump"  # the image's pose jumps away from its neighbours (GPS/USBL outlier)

ALL = (DECODE_ERROR, EMPTY_FILE, OUTSIDE_NAV_SPAN, NO_NAV, NAV_GAP, NAV_INVALID, NAV_JUMP)
NO_TIME = "no_time"  # vehicle-navigation dive, but the image name carries no capture time
UNSAFE_PATH = "unsafe_path"  # a navigation entry's image path escapes the catalog root

UNREADABLE = "unreadable"  # the file cannot be opened (a dangling symlink, no permission)
IMAGE_REFUSED = "image_refused"  # Pillow refuses it: a decompression bomb, an unsupported mode
NAV_UNREADABLE = "nav_unreadable"  # the dive's navigation file cannot be read: the whole dive
DIVE_EMPTY = "dive_empty"  # the dive's template matched no image file
TIME_ORDER = "time_order"  # the pose's time is wrong (out of the file's order, or one time for
#                            several places), not its position
NAV_DEGENERATE = "nav_degenerate"  # the dive's navigation is degenerate and the catalog says
#                                   to quarantine such a dive (nav_checks.degenerate)

NAV_ROW_INVALID = "nav_row_invalid"  # one navigation row is bad (a value out of range, not a
#                                    number, a wrong field count, a last line cut short): that
#                                    row alone is left out, named by file and line

ALL = (*ALL, NO_TIME, UNSAFE_PATH, UNREADABLE, IMAGE_REFUSED, NAV_UNREADABLE, DIVE_EMPTY,
       TIME_ORDER, NAV_DEGENERATE, NAV_ROW_INVALID)
