"""The labels reader takes what annotators hand back: the labelling list filled in part, saved
by a spreadsheet as comma, semicolon or tab separated text, UTF-8 or UTF-16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seafloor_ssl.labels import (
    LabelsError,
    has_label,
    labelled_mask,
    read_labels,
    read_labels_csv,
    read_labels_table,
)

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


# --- the annotation tools' exports -------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent / "data" / "labels"
SURVEY = np.array(["dive01/images/PR_20240313_004046_897_LC16.jpg",
                   "dive01/images/PR_20240313_004047_897_LC16.jpg",
                   "dive01/images/PR_20240313_004048_897_LC16.jpg",
                   "dive02/images/PR_20240313_010512_301_LC16.jpg",
                   "dive02/images/PR_20240313_010513_301_LC16.jpg"], dtype=object)
A, B, C, D, E = SURVEY
OUTSIDE = "PR_20240313_020000_000_LC16"  # named by every golden file, not an image of SURVEY


def test_the_names_an_export_gave_shared_file_names_find_their_images(tmp_path):
    """ssl.habitats --export names an image whose file name another listed image shares by its
    path with '/' as '__'; labels coming back under that name reach that one image."""
    ids = np.array(["dive01/img/0001.jpg", "dive02/img/0001.jpg", "dive02/img/0002.jpg"],
                   dtype=object)
    path = tmp_path / "labels.csv"
    path.write_text("image_id,label\ndive02__img__0001.jpg,reef\ndive01__img__0001.jpg,sand\n"
                    "0002.jpg,gravel\n")
    assert read_labels_csv(path, ids, log=lambda *_: None).tolist() == [
        "sand", "reef", "gravel"]


@pytest.mark.parametrize("rel, fmt, labels, share, votes", [
    # image: A unanimous, B a majority over a disagreement, C a tie, D one way, E not in the file
    ("biigle/image_label_report.csv", "BIIGLE CSV image label report",
     ["Sand", "Reef", None, "Reef", None], [1, 2 / 3, None, 1, None], [2, 3, 2, 1, 0]),
    ("biigle/image_annotation_report.csv", "BIIGLE CSV image annotation report",
     ["Sand", "Reef", None, "Reef", None], [1, 2 / 3, None, 2 / 3, None], [3, 3, 2, 3, 0]),
    ("coralnet/annotations.csv", "CoralNet annotation export",  # D: CCA 2, Sand 2, Porit 1
     ["Sand", "Porit", None, None, None], [1, 0.6, None, None, None], [5, 5, 5, 5, 0]),
    ("squidle/annotations.csv", "Squidle+ annotation export",  # media keys without extension
     ["Sand / mud (<2mm)", "Hard coral", None, "Macroalgae", None], [1, 2 / 3, None, 2 / 3, None],
     [3, 3, 2, 3, 0]),
    ("ifdo/SSL2024_annotations_iFDO.json", "iFDO image annotations",
     ["Sand", "Reef", None, "Reef", None], [1, 2 / 3, None, 1, None], [2, 3, 2, 1, 0]),
])
def test_each_tools_export_is_read_to_its_known_labels(rel, fmt, labels, share, votes):
    notes = []
    got = read_labels(GOLDEN / rel, SURVEY, log=notes.append)
    assert got.format == fmt
    assert got.labels.tolist() == labels
    np.testing.assert_allclose(got.share, [np.nan if s is None else s for s in share])
    assert got.votes.tolist() == votes
    assert C in got.ties  # never broken silently: named, and in the log line with its votes
    said = "\n".join(notes)
    assert f"{fmt}, {sum(votes)} " in said and "by majority of its votes; a tie leaves" in said
    assert f"tie(s) left unlabelled (e.g. {C}: " in said
    assert "by a majority below 100 % (disagreement" in said
    assert "1 image name(s)" in said and OUTSIDE in said  # the image not in the survey: counted
    assert read_labels_csv(GOLDEN / rel, SURVEY, log=notes.append).tolist() == labels


def test_a_biigle_zip_with_one_csv_per_user_is_read_as_one_report(tmp_path):
    """BIIGLE hands its CSV reports out as a ZIP, one CSV per user when separated by user."""
    import zipfile

    lines = (GOLDEN / "biigle/image_label_report.csv").read_text().splitlines(keepends=True)
    by_user: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_user.setdefault(line.split(",")[5], []).append(line)
    path = tmp_path / "biigle_7_csv_image_label_report.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for user, rows in by_user.items():
            zf.writestr(f"{user}-user.csv", lines[0] + "".join(rows))
    assert len(by_user) == 3
    got = read_labels(path, SURVEY, log=lambda *_: None)
    assert got.labels.tolist() == ["Sand", "Reef", None, "Reef", None]
    assert got.votes.tolist() == [2, 3, 2, 1, 0]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", "no report")
    with pytest.raises(LabelsError, match="a ZIP archive without a CSV inside"):
        read_labels(path, SURVEY)


def test_an_ifdo_is_read_as_yaml_too_and_by_content_not_by_name(tmp_path):
    import json

    import yaml

    doc = json.loads((GOLDEN / "ifdo/SSL2024_annotations_iFDO.json").read_text())
    # YAML, and YAML in a file named .json (what ifdo 1.2.x writes)
    for name in ("annotations_iFDO.yaml", "annotations_iFDO.json"):
        (tmp_path / name).write_text(yaml.safe_dump(doc, sort_keys=False))
        got = read_labels(tmp_path / name, SURVEY, log=lambda *_: None)
        assert got.labels.tolist() == ["Sand", "Reef", None, "Reef", None], name
    # a CoralNet export under a misleading name is still a CoralNet export
    (tmp_path / "labels.json").write_bytes((GOLDEN / "coralnet/annotations.csv").read_bytes())
    assert read_labels(tmp_path / "labels.json", SURVEY, log=lambda *_: None).format == (
        "CoralNet annotation export")
    # a label the header does not list is taken as its name (iFDO allows ids or names)
    doc["image-set-items"][E] = {"image-annotations": [{"labels": [{"label": "Mud"}]}]}
    (tmp_path / "names.json").write_text(json.dumps(doc))
    assert read_labels(tmp_path / "names.json", SURVEY, log=lambda *_: None).labels[4] == "Mud"


def _coralnet(tmp_path, points: dict[str, list[str]], name="export.csv") -> Path:
    rows = ["Name,Row,Column,Label"]
    for image, labels in points.items():
        rows += [f"{image},{10 * i},{20 * i},{lab}" for i, lab in enumerate(labels)]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def test_several_labels_per_image_majority_tie_and_disagreement(tmp_path):
    notes = []
    path = _coralnet(tmp_path, {"a.jpg": ["sand", "sand", "reef", "sand"],  # 3 of 4
                                "b.jpg": ["sand", "reef", "reef", "sand"],  # a tie
                                "c.jpg": ["reef", "mud", "sand", "reef", "mud"]})  # a tie at 2
    got = read_labels(path, IDS, log=notes.append)
    assert got.labels.tolist() == ["sand", None, None]
    np.testing.assert_allclose(got.share, [0.75, np.nan, np.nan])
    assert got.votes.tolist() == [4, 4, 5] and got.ties == ["dive01/b.jpg", "dive02/c.jpg"]
    line = notes[-1]
    assert "13 point(s) on 3 image(s)" in line and "1 labelled" in line
    assert "1 of them by a majority below 100 % (disagreement; lowest share 75%)" in line
    assert "2 tie(s) left unlabelled" in line and "dive01/b.jpg: sand 2, reef 2" in line
    assert "dive02/c.jpg: reef 2, mud 2, sand 1" in line
    path = _coralnet(tmp_path, {"a.jpg": ["reef", "reef", "sand"], "c.jpg": ["mud", "mud"]})
    got = read_labels(path, IDS, log=notes.append)
    assert got.labels.tolist() == ["reef", None, "mud"]
    np.testing.assert_allclose(got.share, [2 / 3, np.nan, 1.0])
    assert "(all unanimous)" not in notes[-1] and "1 of them by a majority" in notes[-1]
    # nothing but ties: nothing to learn from, said as one message
    path = _coralnet(tmp_path, {"a.jpg": ["reef", "sand"], "c.jpg": ["mud", "sand"]})
    with pytest.raises(LabelsError, match="no image has a majority label: all 2 matched"):
        read_labels(path, IDS, log=notes.append)


def test_the_most_votes_win_even_below_half(tmp_path):
    path = _coralnet(tmp_path, {"a.jpg": ["reef", "reef", "reef", "mud", "mud", "sand"]})
    got = read_labels(path, IDS, log=lambda *_: None)
    assert got.labels[0] == "reef" and got.share[0] == 0.5


def test_the_table_reader_votes_per_name(tmp_path):
    path = _coralnet(tmp_path, {"a.jpg": ["reef", "reef", "sand"], "b.jpg": ["reef", "sand"]})
    notes = []
    assert read_labels_table(path, log=notes.append) == {"a.jpg": "reef"}
    assert "1 tie(s) left unlabelled (e.g. b.jpg: reef 1, sand 1)" in notes[0]


# --- the label map -----------------------------------------------------------------------------

def test_a_label_map_turns_tool_labels_into_habitats_before_the_vote():
    notes = []
    got = read_labels(GOLDEN / "coralnet/annotations.csv", SURVEY, log=notes.append,
                      label_map=GOLDEN / "coralnet/label_map.csv")
    # B: Porit 3 + CCA 1 = reef 4 of 5; C: sand 2, reef 2 (TAPE ignored) stays a tie;
    # D: CCA 2 + Porit 1 = reef 3 of 5 (a tie between tool labels, a majority of habitats)
    assert got.labels.tolist() == ["sand", "reef", None, "reef", None]
    np.testing.assert_allclose(got.share, [1, 0.8, np.nan, 0.6, np.nan])
    assert got.votes.tolist() == [5, 5, 4, 5, 0]
    assert "mapped to 2 habitat(s); 1 point(s) of ['TAPE'] ignored (mapped to '-')" in notes[0]


@pytest.mark.parametrize("rel, rows, want", [
    # by the tool's hierarchy / lineage / label id, not only by its label name
    ("biigle/image_label_report.csv", "Seafloor > Substrate > Sand,sand\nReef,reef\n",
     ["sand", "reef", None, "reef", None]),
    ("squidle/annotations.csv", "Physical > Substrate > Unconsolidated (soft) > Sand / mud "
     "(<2mm),sand\nHard coral,reef\nMacroalgae,reef\nUnscorable,-\n",
     ["sand", "reef", None, "reef", None]),
    ("ifdo/SSL2024_annotations_iFDO.json", "301,sand\n302,reef\n",
     ["sand", "reef", None, "reef", None]),
])
def test_a_label_map_may_name_hierarchies_lineages_or_ids(tmp_path, rel, rows, want):
    (tmp_path / "map.csv").write_text("Tool_Label;Habitat\n".replace(";", ",") + rows)
    got = read_labels(GOLDEN / rel, SURVEY, log=lambda *_: None, label_map=tmp_path / "map.csv")
    assert got.labels.tolist() == want


def test_labels_the_map_does_not_name_are_listed_in_one_message(tmp_path):
    (tmp_path / "map.csv").write_text("tool_label\thabitat\nSand\tsand\nPorit\treef\n")
    with pytest.raises(LabelsError) as exc:
        read_labels(GOLDEN / "coralnet/annotations.csv", SURVEY,
                    label_map=tmp_path / "map.csv")
    msg = str(exc.value)
    assert "names no habitat for 2 label(s) of annotations.csv: 'CCA' (3), 'TAPE' (1)" in msg
    assert "add a row tool_label,habitat for each, or tool_label,- to ignore it" in msg


@pytest.mark.parametrize("text, expect", [
    ("label,class\nSand,sand\n", "expected columns tool_label,habitat"),
    ("tool_label,habitat\nSand,sand\nSand,reef\n", "line 3: tool label 'Sand' is mapped to "
     "'sand' and to 'reef'"),
    ("tool_label,habitat\nSand,\n", "line 2: tool_label 'Sand', habitat ''; expected both"),
    ("tool_label,habitat\n", "no rows"),
    ("tool_label,habitat\nSand,-\nPorit,-\nCCA,-\nTAPE,-\n", "the label map ignores every"),
])
def test_unusable_label_maps_get_one_message(tmp_path, text, expect):
    (tmp_path / "map.csv").write_text(text)
    with pytest.raises(LabelsError, match=expect):
        read_labels(GOLDEN / "coralnet/annotations.csv", SURVEY, log=lambda *_: None,
                    label_map=tmp_path / "map.csv")
    with pytest.raises(LabelsError, match="--label-map .*nothing.csv: no such file"):
        read_labels(GOLDEN / "coralnet/annotations.csv", SURVEY,
                    label_map=tmp_path / "nothing.csv")


def test_the_labelling_list_is_mapped_too(tmp_path):
    (tmp_path / "map.csv").write_text("tool_label,habitat\nSédiment,sand\nreef,reef\n")
    path = tmp_path / "labels.csv"
    path.write_text("image_id,label\ndive01/a.jpg,Sédiment\ndive02/c.jpg,reef\n")
    assert read_labels_csv(path, IDS, label_map=tmp_path / "map.csv",
                           log=lambda *_: None).tolist() == ["sand", None, "reef"]


# --- what no reader knows ----------------------------------------------------------------------

def test_an_unknown_format_is_one_message_naming_header_formats_and_what_to_do(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("file_upload,annotation_id,choice\nx.jpg,1,sand\n")
    with pytest.raises(LabelsError) as exc:
        read_labels(path, SURVEY)
    msg = str(exc.value)
    assert msg.startswith(f"--labels {path}: not a labels file of a known format")
    assert "found the header ['file_upload', 'annotation_id', 'choice']" in msg
    for known in ("image_id,label", "BIIGLE CSV image label report (image_label_id, filename, "
                  "label_name", "BIIGLE CSV image annotation report (annotation_label_id",
                  "CoralNet annotation export (Name, Row, Column, Label code",
                  "Squidle+ annotation export (point.media.key, label.name)",
                  "iFDO, JSON or YAML (image-set-items with image-annotations"):
        assert known in msg, known
    assert msg.endswith("or write a CSV with columns image_id,label")
    path.write_text('[{"image": "x.jpg", "label": "sand"}]')
    with pytest.raises(LabelsError, match="found a JSON/YAML list .no image-set-items.; "
                                          "expected columns image_id,label or"):
        read_labels(path, SURVEY)
    nav = tmp_path / "nav_iFDO.json"
    nav.write_text('{"image-set-header": {}, "image-set-items": {"a.jpg": {"image-depth": 3}}}')
    with pytest.raises(LabelsError, match="an iFDO file without image-annotations"):
        read_labels(nav, SURVEY)


def test_the_pipeline_reads_a_tools_export_and_matches_it_by_file_name(tmp_path):
    """A catalog's labels key naming a CoralNet export: votes per file name, aligned with the
    located images by file name, the ties reported among the build's warnings."""
    from types import SimpleNamespace

    from pipeline import build

    (tmp_path / "labels.csv").write_bytes((GOLDEN / "coralnet/annotations.csv").read_bytes())
    cat = SimpleNamespace(labels="labels.csv", root=tmp_path, source=tmp_path / "catalog.yaml")
    notes = []
    given = build._labels(cat, notes)
    assert given == {"PR_20240313_004046_897_LC16.jpg": "Sand",
                     "PR_20240313_004047_897_LC16.jpg": "Porit",
                     "PR_20240313_020000_000_LC16.jpg": "Sand"}
    assert "2 tie(s) left unlabelled" in notes[0]
    column = build._label_column(cat, given, SURVEY, notes)
    assert column == ["Sand", "Porit", None, None, None]
    assert "2 of its 3 labelled image names matched to images by file name" in notes[1]
    # ids of the survey: as the pipeline always matched them, nothing said
    assert build._label_column(cat, {A: "sand", "x/y.jpg": "reef"}, SURVEY, notes) == [
        "sand", None, None, None, None] and len(notes) == 2


def test_a_yaml_ifdo_without_pyyaml_is_one_message(tmp_path, monkeypatch):
    import sys

    (tmp_path / "a_iFDO.yaml").write_text("image-set-header: {}\nimage-set-items: {}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(LabelsError, match="reading YAML needs PyYAML .* or save the iFDO as JSON"):
        read_labels(tmp_path / "a_iFDO.yaml", SURVEY)


def test_both_commands_take_label_map_only_with_labels(tmp_path, capsys):
    from seafloor_ssl.evaluation.run import build_parser as evaluate_parser
    from seafloor_ssl.evaluation.run import main as evaluate_main
    from seafloor_ssl.habitats import build_parser as habitats_parser

    for parser in (evaluate_parser(), habitats_parser()):
        assert "--label-map" in parser.format_help()
    rc = evaluate_main(["--baseline", "handcrafted", "--manifest", str(tmp_path / "p.parquet"),
                        "--out", str(tmp_path / "ev"), "--label-map", str(tmp_path / "m.csv")])
    assert rc == 2 and "maps the labels of --labels; pass --labels too" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
