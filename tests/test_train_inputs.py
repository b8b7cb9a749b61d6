"""The trainer against real-world inputs: a run resumes across a rebuild that changes nothing
and refuses one that changed the data, saying what changed; every bad flag or file gets one
message and exit status 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from seafloor_ssl.evaluation.run import main as evaluate_main
from seafloor_ssl.training.run import main

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

SMALL = ["--backbone", "tiny", "--image-size", "32", "--sp-size", "24", "--batch-size", "8",
         "--workers", "0", "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=24, seed=4, faults=False,
                         workers=2))
    return root


def _site(survey: Path, dest: Path) -> Path:
    shutil.copytree(survey, dest)
    build(load_catalog(dest / "catalog.yaml"), workers=2, log=lambda *_: None)
    return dest / "manifests" / "pairs.parquet"


@pytest.fixture(scope="module")
def pairs(survey, tmp_path_factory) -> Path:
    return _site(survey, tmp_path_factory.mktemp("built") / "site")


def _meta(path: Path) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}


def _train(pairs: Path, out: Path, *extra: str) -> int:
    return main(["--manifest", str(pairs), "--out", str(out), *SMALL, "--objective", "geoclr",
                 *extra])


def test_a_run_resumes_after_a_full_rebuild_that_changes_nothing(survey, tmp_path, capsys):
    pairs = _site(survey, tmp_path / "site")
    run = tmp_path / "run"
    assert _train(pairs, run, "--steps", "4", "--stop-at-step", "2") == 0
    before, generation = _meta(pairs), pairs.resolve().parent
    build(load_catalog(tmp_path / "site" / "catalog.yaml"), full_rebuild=True, workers=2,
          log=lambda *_: None)
    after = _meta(pairs)
    # a new generation of files, written afresh; the dataset they describe is the same
    assert pairs.resolve().parent != generation
    assert json.loads(after["dataset"])["digest"] == json.loads(before["dataset"])["digest"]
    assert _train(pairs, run, "--steps", "4", "--resume") == 0, capsys.readouterr().err
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4


def test_resume_on_a_changed_dataset_says_what_changed(survey, tmp_path, capsys):
    pairs = _site(survey, tmp_path / "site")
    run = tmp_path / "run"
    assert _train(pairs, run, "--steps", "4", "--stop-at-step", "2") == 0
    site = tmp_path / "site"
    first = sorted((site / "dive02" / "images").glob("*.jpg"))[0]
    first.unlink()  # one image fewer in dive02
    build(load_catalog(site / "catalog.yaml"), workers=2, log=lambda *_: None)
    capsys.readouterr()
    assert _train(pairs, run, "--steps", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "not the dataset the checkpoint was trained on" in err
    assert "dive dive02: 24 -> 23 images" in err and "Traceback" not in err
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2  # untouched


def test_resume_with_another_pair_radius_names_the_policy(survey, tmp_path, capsys):
    pairs = _site(survey, tmp_path / "site")
    run = tmp_path / "run"
    assert _train(pairs, run, "--steps", "4", "--stop-at-step", "2") == 0
    build(load_catalog(tmp_path / "site" / "catalog.yaml"), r_loc_m=9.0, workers=2,
          log=lambda *_: None)
    capsys.readouterr()
    assert _train(pairs, run, "--steps", "4", "--resume") == 2
    assert "pair policy: r_loc_m" in capsys.readouterr().err


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00 this is not a checkpoint \xff" * 40)
    return path


def test_batch_larger_than_the_dataset_is_one_message(pairs, tmp_path, capsys):
    assert main(["--manifest", str(pairs), "--out", str(tmp_path / "r"), *SMALL,
                 "--batch-size", "500", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 500 is larger than the manifest's 48 images" in err
    assert "--batch-size 48 or less" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--batch-size", "--image-size", "--sp-size", "--lr",
                                  "--steps", "--csp-negatives"])
@pytest.mark.parametrize("value", ["0", "-3", "nan", "abc"])
def test_nonsensical_numbers_are_argparse_errors(pairs, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        main(["--manifest", str(pairs), "--out", str(tmp_path / "r"), *SMALL, flag, value])
    assert exc.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_garbage_files_as_checkpoints_are_one_message(pairs, tmp_path, capsys):
    bad = _garbage(tmp_path / "bad.pt")
    cases = [
        ["--init", str(bad)],
        ["--objective", "csp", "--image-encoder", str(bad)],
        ["--objective", "csp", "--image-encoder", str(tmp_path / "missing.pt")],
    ]
    for extra in cases:
        code = main(["--manifest", str(pairs), "--out", str(tmp_path / "r"), *SMALL,
                     "--steps", "2", *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert str(bad.name if "missing" not in extra[-1] else "missing.pt") in err
        assert "Traceback" not in err and "weights_only=False" not in err
    run = tmp_path / "run"
    assert _train(pairs, run, "--steps", "2") == 0
    _garbage(run / "last.pt")
    capsys.readouterr()
    assert _train(pairs, run, "--steps", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "cannot be read as a PyTorch checkpoint" in err


class NotWeights:
    """Any class outside torch's weights-only allow-list: loading it would run code."""


def test_a_checkpoint_with_code_is_never_unpickled(pairs, tmp_path, capsys):
    torch.save({"encoder": NotWeights()}, tmp_path / "code.pt")
    assert main(["--manifest", str(pairs), "--out", str(tmp_path / "r"), *SMALL, "--steps",
                 "2", "--init", str(tmp_path / "code.pt")]) == 2
    err = capsys.readouterr().err
    assert "never unpickled" in err and "weights_only=False" not in err


def test_a_tiny_checkpoint_as_init_for_resnet18_says_which_backbone(pairs, tmp_path, capsys):
    run = tmp_path / "tiny"
    assert _train(pairs, run, "--steps", "1") == 0
    capsys.readouterr()
    code = main(["--manifest", str(pairs), "--out", str(tmp_path / "r"), *SMALL[2:],
                 "--backbone", "resnet18", "--steps", "1", "--init", str(run / "last.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "a tiny checkpoint, but this run trains a resnet18" in err


def test_evaluate_refuses_a_garbage_checkpoint_in_one_message(pairs, tmp_path, capsys):
    code = evaluate_main(["--checkpoint", str(_garbage(tmp_path / "x.pt")), "--manifest",
                          str(pairs), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2 and "x.pt: cannot be read as a PyTorch checkpoint" in err
    assert "weights_only=False" not in err and "Traceback" not in err


def test_a_header_validated_manifest_says_how_to_get_training_images(survey, tmp_path,
                                                                     capsys):
    site = tmp_path / "site"
    shutil.copytree(survey, site)
    cat = site / "catalog.yaml"
    text = cat.read_text()
    text = (text.replace("validate: decode", "validate: header") if "validate:" in text
            else text + "\nvalidate: header\n")
    cat.write_text(text)
    build(load_catalog(cat), workers=2, log=lambda *_: None)
    code = main(["--manifest", str(site / "manifests" / "pairs.parquet"), "--out",
                 str(tmp_path / "r"), *SMALL, "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "validate: header" in err and "validate: decode" in err


def test_a_truncated_image_file_is_one_message(pairs, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(pairs.resolve().parent, folder)
    store = folder / "images" / "dive01.arrow"
    store.write_bytes(store.read_bytes()[:1000])
    code = main(["--manifest", str(folder / "pairs.parquet"), "--out", str(tmp_path / "r"),
                 *SMALL, "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "dive01.arrow: the image file is damaged" in err


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_image_file_cut_short_while_training_is_one_message(pairs, tmp_path, capsys,
                                                              monkeypatch, workers):
    from seafloor_ssl.data.store import ImageStore
    from seafloor_ssl.training import objective as tasks

    folder = tmp_path / "m"
    shutil.copytree(pairs.resolve().parent, folder)
    opened = ImageStore.open

    def open_then_cut(manifest):  # the file shrinks after the trainer indexed it
        store = opened(manifest)
        for path in store.paths:
            with open(path, "r+b") as f:
                f.truncate(64)
        return store

    monkeypatch.setattr(tasks.ImageStore, "open", staticmethod(open_then_cut))
    code = main(["--manifest", str(folder / "pairs.parquet"), "--out", str(tmp_path / "r"),
                 *SMALL, "--steps", "2", "--workers", workers])
    err = capsys.readouterr().err
    assert code == 2 and "shorter than when it was opened" in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_a_truncated_pairs_file_is_one_message(pairs, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(pairs.resolve().parent, folder)
    p = folder / "pairs.parquet"
    p.write_bytes(p.read_bytes()[:-100])
    code = main(["--manifest", str(p), "--out", str(tmp_path / "r"), *SMALL, "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "pairs.parquet" in err and "Traceback" not in err


def test_an_old_schema_manifest_names_the_builder_to_use(pairs, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(pairs.resolve().parent, folder)
    p = folder / "pairs.parquet"
    t = pq.read_table(p)
    meta = dict(t.schema.metadata)
    meta[b"schema_version"] = b"1"
    pq.write_table(t.replace_schema_metadata(meta), p)
    code = main(["--manifest", str(p), "--out", str(tmp_path / "r"), *SMALL, "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "manifest schema 1" in err and "builder 0.2.0" in err


def test_folders_given_for_files_name_the_file_they_hold(pairs, tmp_path, capsys):
    """The manifest folder for --manifest, a run folder for --init or --checkpoint: one message
    naming the file inside that was most likely meant."""
    run = tmp_path / "run"
    assert _train(pairs, run, "--steps", "1") == 0
    capsys.readouterr()
    assert main(["--manifest", str(pairs.parent), "--out", str(tmp_path / "r"), *SMALL,
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a folder; expected the pairs.parquet" in err
    assert f"it holds {pairs.parent / 'pairs.parquet'}: pass that" in err
    assert main(["--manifest", str(pairs), "--out", str(tmp_path / "r"), *SMALL,
                 "--steps", "1", "--init", str(run)]) == 2
    assert f"it holds {run / 'last.pt'}: pass that" in capsys.readouterr().err
    code = evaluate_main(["--checkpoint", str(run), "--manifest", str(pairs), "--out",
                          str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2 and f"it holds {run / 'last.pt'}: pass that" in err
    assert "Traceback" not in err
