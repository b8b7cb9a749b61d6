"""The labels reader takes what annotators hand back: the labelling list filled in part, saved
by a spreadsheet as comma, semicolon or tab separated text, UTF-8 or UTF-16."""

from __future__ import annotations

import numpy as np
import pytest
from seafloor_ssl.labels import LabelsError, has_label, labelled_mask, read_labels_csv

IDS = np.array(["dive01/a.jpg", "dive01/b.jpg", "dive02/c.jpg"], dtype=object)


@pytest.mark.parametrize("value, labelled", [(None, False), (float("nan"), False), ("", False),
                                             ("  ", False), ("\t\n", False), ("sand", True),
                                             (" sand ", True), (np.str_("reef"), True)])
def test_a_label_is_text_that_is_not_blank(value, labelled):
    assert has_label(value) is labelled
    assert labelled_mask(np.array([value, "reef"], dtype=object)).tolist() == [labelled, True]


def _read(tmp_path, text: str, encoding: str = "utf-8", notes=None):
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return read_labels_csv(path, IDS, log=(notes.append if notes is not None else print))


@pytest.mark.parametrize("sep", [",", ";", "\t"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_spreadsheet_exports_are_read(tmp_path, sep, encoding):
    text = sep.join(["rank", "Image_ID ", "file", " Label"]) + "\r\n"
    text += sep.join(["1", "dive01/a.jpg", "/x/a.jpg", "Sédiment"]) + "\r\n"
    text += sep.join(["2", "dive02/c.jpg", "/x/c.jpg", "reef"]) + "\r\n"
    got = _read(tmp_path, text, encoding)
    assert got.tolist() == ["Sédiment", None, "reef"]


def test_a_list_labelled_in_part_keeps_the_labelled_rows(tmp_path):
    got = _read(tmp_path, "image_id,label\ndive01/a.jpg,sand\ndive01/b.jpg,\n,\n")
    assert got.tolist() == ["sand", None, None]


def test_labels_for_other_images_are_counted_not_silently_dropped(tmp_path):
    notes = []
    got = _read(tmp_path, "image_id,label\ndive01/a.jpg,sand\ndive09/z.jpg,reef\n", notes=notes)
    assert got.tolist() == ["sand", None, None]
    assert notes and "1 label(s)" in notes[0]


@pytest.mark.parametrize("text, expect", [
    ("image_id;habitat\ndive01/a.jpg;sand\n", "expected columns image_id,label"),
    ("image_id,label\ndive01/a.jpg,sand\ndive01/a.jpg,reef\n", "line 3"),
    ("image_id,label\nother/zz.jpg,sand\n", "none of its 1 image_id"),
    ("", "expected columns image_id,label"),
    ("rank,image_id,label\n1,dive01/a.jpg,\n2,dive01/b.jpg,\n", "no row has both"),
    ("PAR1\x00\x15", "a Parquet file; expected a CSV"),
])
def test_unusable_files_get_one_message(tmp_path, text, expect):
    with pytest.raises(LabelsError, match=expect):
        _read(tmp_path, text)


def test_text_in_another_encoding_is_named(tmp_path):
    with pytest.raises(LabelsError, match="not UTF-8.*save the CSV as UTF-8"):
        _read(tmp_path, "image_id,label\ndive01/a.jpg,Sédiment\n", encoding="cp1252")


def test_a_folder_given_for_the_file_names_the_list_inside(tmp_path):
    (tmp_path / "labelling_list.csv").write_text("image_id,label\n")
    with pytest.raises(LabelsError, match="is a folder.*labelling_list.csv: pass that"):
        read_labels_csv(tmp_path, IDS)
    with pytest.raises(LabelsError, match="no such file"):
        read_labels_csv(tmp_path / "nothing.csv", IDS)


def test_the_pipeline_reads_truth_labels_the_same_way(tmp_path):
    """A catalog's labels file, read by the pipeline through the same reader (loaded from the
    file alone, as a checkout without the installed package loads it)."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    from pipeline import build

    (tmp_path / "labels.csv").write_text("Image_ID;Label\ndive01/a.jpg;sand\ndive01/b.jpg;\n")
    cat = SimpleNamespace(labels="labels.csv", root=tmp_path, source=tmp_path / "catalog.yaml")
    assert build._labels(cat) == {"dive01/a.jpg": "sand"}
    (tmp_path / "labels.csv").write_text("image_id,label\ndive01/a.jpg,sand\ndive01/a.jpg,mud\n")
    with pytest.raises(build.SettingsError, match="key 'labels'.*line 3.*more than once"):
        build._labels(cat)
    src = Path(__file__).resolve().parents[1] / "ssl" / "labels.py"
    spec = importlib.util.spec_from_file_location("_alone_labelsfile", src)
    alone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(alone)
    (tmp_path / "labels.csv").write_text("image_id\tlabel\ndive01/a.jpg\treef\n")
    assert alone.read_labels_table(tmp_path / "labels.csv") == {"dive01/a.jpg": "reef"}


def test_file_names_or_paths_of_another_layout_are_matched_by_name_and_said(tmp_path):
    notes = []
    text = "image_id,label\na.jpg,sand\nC:\\\\export\\\\dive02\\\\c.jpg,reef\nzz.jpg,mud\n"
    got = _read(tmp_path, text, notes=notes)
    assert got.tolist() == ["sand", None, "reef"]
    assert "2 of its 3 labels were matched to images by file name" in notes[0]
    assert "1 label(s)" in notes[1]  # zz.jpg: no such image, counted


def test_a_file_name_several_images_share_is_refused_not_guessed(tmp_path):
    ids = np.array(["dive01/img/0001.jpg", "dive02/img/0001.jpg", "dive02/img/0002.jpg"],
                   dtype=object)
    path = tmp_path / "labels.csv"
    path.write_text("image_id,label\n0001.jpg,sand\n")
    with pytest.raises(LabelsError, match="file name is that of 2 images"):
        read_labels_csv(path, ids)
    path.write_text("image_id,label\n0002.jpg,sand\n/x/dive02/img/0002.jpg,reef\n")
    with pytest.raises(LabelsError, match="labelled 'sand' and 'reef' under two names"):
        read_labels_csv(path, ids)
    # exact ids are used as they are: no matching by name then
    path.write_text("image_id,label\ndive01/img/0001.jpg,sand\n0002.jpg,reef\n")
    assert read_labels_csv(path, ids, log=lambda *_: None).tolist() == ["sand", None, None]
