"""``python -m pipeline init SURVEY_DIR``: propose a catalog for a survey folder tree.

The tree is walked once (:mod:`.scan`): image folders, and every file a reader recognises as
navigation (the readers' own sniffs decide; init never guesses a format). Then:

* :mod:`.layout` -- dive folders and the image template. Dive folders are the folders that hold
  image files directly or in an image subfolder (``images/``, ``i*_cv/``, a date-named folder);
  the ``dives`` glob and the image template are written to fit the dives that come later too
  (``dive*``; ``i20150918_000954_cv`` -> ``i*_cv``), even for a survey of one dive.
* :mod:`.navsources` -- navigation files attributed to dives become templates (``{dive}``,
  ``{dive_id}``, ``json_renav_*``), one source per format and template, per-image poses first.
* :mod:`.shared_nav` -- a file that names no dive but lists the dives' images, or a vehicle log
  spanning their times, becomes a source shared by all dives; EXIF GPS when there is no file;
  image names no built-in pattern reads are shown, with the ``image_time:`` key to set.
* :mod:`.explain` -- a CSV no reader took: what was looked for, found, nearest, and the
  ``columns:`` map to write.
* :mod:`.proposal` puts it together and checks it with the pipeline's own functions;
  :mod:`.catalog_text` writes the commented catalog and the report, and runs the command.
"""

from .catalog_text import catalog_yaml, report, run_init, write_catalog
from .layout import dive_of_image_folder, dives_glob, generalise, per_dive_part
from .navsources import nav_template
from .proposal import Proposal, ScaffoldError, propose

__all__ = [
    "Proposal",
    "ScaffoldError",
    "catalog_yaml",
    "dive_of_image_folder",
    "dives_glob",
    "generalise",
    "nav_template",
    "per_dive_part",
    "propose",
    "report",
    "run_init",
    "write_catalog",
]
