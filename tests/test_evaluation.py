"""Evaluation: known answers for the probes, the split guarantee, the report, and the CLI end to
end on tiny trained checkpoints (simclr, and CSP with its location probe)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seafloor_ssl.data.manifest import load_manifest
from seafloor_ssl.evaluation.probes import (
    evaluate_features,
    few_label_subset,
    knn,
    linear_svm,
    location_probe,
    logistic,
    scores,
)
from seafloor_ssl.evaluation.report import FIGURES, markdown_table
from seafloor_ssl.evaluation.run import location_embeddings, main
from seafloor_ssl.evaluation.splits import blocked_split, buffer_mask, default_block_m, random_split
from seafloor_ssl.training.location import make_location_encoder
from seafloor_ssl.training.run import build_parser, train
from surveys import mini_manifest

CLASSES = ["gravel", "reef", "rippled_sand", "sand", "seagrass", "sponge_garden"]


def survey(n: int = 600, seed: int = 0, extent: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """Positions along a few lawn-mower lines (like dive tracks) and a habitat per patch."""
    rng = np.random.default_rng(seed)
    lines = 6
    x = np.tile(np.linspace(0, extent, n // lines), lines)[:n]
    y = np.repeat(np.linspace(0, extent, lines), n // lines)[:n] + rng.normal(0, 0.5, n)
    xy = np.stack([x, y], 1) + 500_000.0
    patch = (np.floor(x / 35) + 3 * np.floor(y / 70)).astype(int)
    labels = np.array([CLASSES[p % len(CLASSES)] for p in patch], dtype=object)
    return xy, labels


def min_cross_distance(xy: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) or not len(b):
        return np.inf
    d = np.sqrt(((xy[a][:, None, :] - xy[b][None, :, :]) ** 2).sum(-1))
    return float(d.min())


# --- splits ----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), r_loc=st.floats(0.5, 12.0), factor=st.floats(2.0, 6.0),
       layout=st.sampled_from(["uniform", "tracks", "clusters"]),
       frac=st.floats(0.1, 0.5), with_labels=st.booleans())
def test_blocked_split_never_puts_neighbours_on_both_sides(seed, r_loc, factor, layout, frac,
                                                           with_labels):
    rng = np.random.default_rng(seed)
    n = 300
    if layout == "uniform":
        xy = rng.uniform(0, 150, (n, 2))
    elif layout == "tracks":
        t = rng.uniform(0, 150, n)
        xy = np.stack([t, rng.integers(0, 5, n) * r_loc * 1.5 + rng.normal(0, 0.3, n)], 1)
    else:
        centres = rng.uniform(0, 150, (8, 2))
        xy = centres[rng.integers(0, 8, n)] + rng.normal(0, r_loc, (n, 2))
    xy = xy + 6_000_000.0  # UTM-like magnitudes
    labels = rng.choice(CLASSES, n) if with_labels else None
    split = blocked_split(xy, factor * r_loc, frac, seed, r_loc=r_loc, labels=labels)
    train, test = split
    assert len(test) > 0 and len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) + split.n_buffer == n
    assert min_cross_distance(xy, train, test) > r_loc
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_blocked_split_is_seeded_and_hits_the_fraction():
    xy, labels = survey()
    a = blocked_split(xy, 20.0, 0.3, seed=1, r_loc=5.0)
    b = blocked_split(xy, 20.0, 0.3, seed=1, r_loc=5.0)
    c = blocked_split(xy, 20.0, 0.3, seed=2, r_loc=5.0)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.test, c.test)
    for seed in range(5):
        s = blocked_split(xy, 20.0, 0.3, seed, r_loc=5.0, labels=labels)
        assert 0.2 <= len(s.test) / len(xy) <= 0.4
        assert s.n_buffer > 0  # the buffer is at work on contiguous tracks
    # whole blocks: no block id on both sides
    assert not set(a.blocks[a.test]) & set(a.blocks[a.train])


def test_buffer_mask_is_inclusive_at_r_loc():
    tr = np.array([[0.0, 0.0], [5.0, 0.0], [5.5, 0.0]])
    te = np.array([[10.0, 0.0]])
    assert buffer_mask(tr, te, 5.0).tolist() == [False, True, True]
    assert buffer_mask(tr, te, 4.7).tolist() == [False, False, True]


def test_default_block_side():
    assert default_block_m(5.0) == 20.0
    assert default_block_m(15.0) == 30.0


def test_random_split_warns_and_partitions():
    with pytest.warns(UserWarning, match="random train/test split"):
        s = random_split(100, 0.3, seed=0)
    assert len(s.test) == 30 and len(s.train) == 70
    assert sorted(np.concatenate([s.train, s.test]).tolist()) == list(range(100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(random_split(100, 0.3, 0).test, s.test)
        assert not np.array_equal(random_split(100, 0.3, 1).test, s.test)


def test_few_label_subset_sizes():
    labels = np.array(["a"] * 30 + ["b"] * 8 + ["c"] * 50, dtype=object)
    train = np.arange(0, 88, 1)[::1]
    sub = few_label_subset(train, labels, 10, seed=0)
    counts = {c: int((labels[sub] == c).sum()) for c in "abc"}
    assert counts == {"a": 10, "b": 8, "c": 10}
    assert set(sub.tolist()) <= set(train.tolist()) and len(set(sub.tolist())) == len(sub)
    assert np.array_equal(sub, few_label_subset(train, labels, 10, seed=0))
    assert not np.array_equal(sub, few_label_subset(train, labels, 10, seed=1))
    assert np.array_equal(few_label_subset(train, labels, None, 0), np.sort(train))
    part = np.arange(0, 88, 2)  # drawn from the given training side only
    assert set(few_label_subset(part, labels, 5, 0).tolist()) <= set(part.tolist())


# --- probes ----------------------------------------------------------------------------------

def test_scores_known_values():
    s = scores(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert s["per_class_f1"]["a"] == pytest.approx(2 / 3)
    assert s["per_class_f1"]["b"] == pytest.approx(0.8)
    assert s["per_class_f1"]["c"] is None  # not on the test side: not in the macro average
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert s["accuracy"] == pytest.approx(0.75)


def separable(labels: np.ndarray, seed: int = 0, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.05, (len(labels), dim)).astype(np.float32)
    for i, c in enumerate(CLASSES):
        X[labels == c, i] += 3.0
    return X


def test_probes_separate_separable_features():
    xy, labels = survey()
    X = separable(labels)
    train, test = blocked_split(xy, 20.0, 0.3, 0, r_loc=5.0)
    for probe in (linear_svm, logistic):
        for dims in (8, None):
            pred = probe(X[train], labels[train], X[test], pca_dims=dims, seed=0)
            assert scores(labels[test], pred, CLASSES)["macro_f1"] == 1.0
    pred = knn(X[train], labels[train], X[test])
    assert scores(labels[test], pred, CLASSES)["macro_f1"] == 1.0


def test_evaluate_features_perfect_on_separable_features():
    xy, labels = survey()
    X = separable(labels)
    m = evaluate_features(X, labels, xy, 5.0, seeds=(0, 1, 2), regimes=(10, None))
    assert len(m["results"]) == 3 * 2 * 2  # probes x dims x regimes
    for row in m["results"]:
        assert row["macro_f1"]["mean"] == 1.0, row
        assert row["accuracy"]["mean"] == 1.0 and row["macro_f1"]["std"] == 0.0
        assert len(row["macro_f1"]["values"]) == 3
    assert m["reference"]["macro_f1"] == 1.0
    cm = np.array(m["confusion"]["matrix"])
    assert cm.sum() == cm.trace() == m["splits"][0]["n_test"]
    arrays = m["arrays"]
    assert arrays["test_mask"].sum() == m["splits"][0]["n_test"]
    assert not (arrays["test_mask"] & arrays["train_mask"]).any()
    pred = arrays["predictions"]
    assert all(pred[i] == labels[i] for i in np.flatnonzero(arrays["test_mask"]))
    assert all(pred[i] is None for i in np.flatnonzero(~arrays["test_mask"]))
    json.dumps({k: v for k, v in m.items() if k != "arrays"})  # JSON-ready


def test_evaluate_features_chance_on_unrelated_features():
    xy, labels = survey(n=900)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(len(labels), 32)).astype(np.float32)
    m = evaluate_features(X, labels, xy, 5.0, seeds=(0, 1, 2), regimes=(50, None))
    # 6 classes: chance macro-F1 is about 1/6; the bound leaves room for small test sides
    for row in m["results"]:
        assert row["macro_f1"]["mean"] < 0.3, row


def per_class_f1_from_confusion(confusion: dict) -> dict:
    """F1 of each class from a confusion matrix (rows true): 2 TP / (true + predicted); None for
    a class not on the test side."""
    cm = np.array(confusion["matrix"], dtype=float)
    true, pred = cm.sum(1), cm.sum(0)
    return {c: (2 * cm[i, i] / (true[i] + pred[i]) if true[i] else None)
            for i, c in enumerate(confusion["labels"])}


def test_per_class_f1_is_the_reference_probes_like_its_confusion():
    xy, labels = survey(n=600)
    X = np.random.default_rng(4).normal(size=(len(labels), 8)).astype(np.float32)
    X[:, 0] += 0.8 * (labels == "reef")  # weakly informative: the seeds score differently
    m = evaluate_features(X, labels, xy, 5.0, seeds=(0, 1), regimes=(None,), probes=("svm",),
                          dims=(None,))
    values = m["results"][0]["macro_f1"]["values"]
    assert values[0] != values[1]  # otherwise the check below cannot tell the two apart
    expected = per_class_f1_from_confusion(m["confusion"])
    assert m["per_class_f1"].keys() == expected.keys()
    for c, v in expected.items():
        assert m["per_class_f1"][c] == (None if v is None else pytest.approx(v, abs=1e-9)), c


def test_evaluate_features_skips_unlabelled_and_random_split_warns():
    xy, labels = survey()
    labels = labels.copy()
    labels[::4] = None
    X = separable(np.where(labels == None, "gravel", labels))  # noqa: E711
    with pytest.warns(UserWarning, match="random"):
        m = evaluate_features(X, labels, xy, 5.0, seeds=(0,), regimes=(None,), probes=("svm",),
                              dims=(None,), random=True)
    assert m["n_labelled"] == len(labels) - len(labels[::4])
    assert m["protocol"]["split"] == "random" and m["protocol"]["block_m"] is None
    assert not m["arrays"]["test_mask"][::4].any()


def test_location_probe_rows():
    xy, labels = survey()
    X = np.random.default_rng(0).normal(size=(len(labels), 8)).astype(np.float32)
    L = separable(labels, seed=1, dim=12)
    rows = location_probe(X, L, labels, xy, 5.0, seeds=(0, 1), regimes=(None,))
    got = {(r["features"], r["probe"], r["dims"], r["regime"]): r for r in rows}
    assert set(got) == {("location", "svm", "full", "all"), ("fused", "svm", "full", "all")}
    assert got[("location", "svm", "full", "all")]["macro_f1"]["mean"] == 1.0
    assert got[("fused", "svm", "full", "all")]["macro_f1"]["mean"] > 0.9


# --- report ----------------------------------------------------------------------------------

def row(probe, dims, regime, mean, std, features="image"):
    return {"features": features, "probe": probe, "dims": dims, "regime": regime,
            "macro_f1": {"mean": mean, "std": std}, "accuracy": {"mean": mean, "std": std}}


def test_markdown_table_format():
    rows = [row("svm", "128", "10", 0.8123, 0.0131), row("svm", "128", "all", 0.9, 0.0),
            row("knn", "full", "10", 0.5, 0.25)]
    assert markdown_table(rows) == (
        "| probe | dims | 10 / class | all labels |\n"
        "|---|---|---:|---:|\n"
        "| svm | 128 | 0.812 ± 0.013 | 0.900 ± 0.000 |\n"
        "| knn | full | 0.500 ± 0.250 | — |\n")
    table = markdown_table({"results": rows[:1],
                            "location_results": [row("svm", "full", "10", 0.7, 0.1, "fused")]})
    assert table.splitlines()[0] == "| features | probe | dims | 10 / class |"
    assert table.splitlines()[2] == "| image | svm | 128 | 0.812 ± 0.013 |"
    assert table.splitlines()[3] == "| fused | svm | full | 0.700 ± 0.100 |"


# --- the CLI end to end ----------------------------------------------------------------------

SMALL = ["--backbone", "tiny", "--image-size", "32", "--batch-size", "16", "--workers", "0",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("eval") / "site")


def train_run(manifest: Path, out: Path, *extra: str) -> Path:
    train(build_parser().parse_args(["--manifest", str(manifest), "--out", str(out), *SMALL,
                                     *extra]))
    return out / "last.pt"


@pytest.fixture(scope="module")
def simclr_ckpt(manifest, tmp_path_factory) -> Path:
    return train_run(manifest, tmp_path_factory.mktemp("runs") / "simclr", "--objective",
                     "simclr", "--steps", "10")


def assert_seed_summaries(rows: list[dict], n_seeds: int) -> None:
    """Each row's mean and spread are the mean and the sample standard deviation of its per-seed
    macro-F1 values, recomputed here."""
    assert rows
    for r in rows:
        v = np.array(r["macro_f1"]["values"], dtype=float)
        assert len(v) == n_seeds, r
        assert r["macro_f1"]["mean"] == pytest.approx(v.mean(), abs=1e-12), r
        assert r["macro_f1"]["std"] == pytest.approx(v.std(ddof=1), abs=1e-12), r


def test_cli_end_to_end(manifest, simclr_ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["--checkpoint", str(simclr_ckpt), "--manifest", str(manifest), "--out", str(out),
               "--device", "cpu", "--regimes", "5,all"])
    assert rc == 0
    for name in ("metrics.json", "table.md", *FIGURES):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"]["split"] == "blocked" and m["protocol"]["seeds"] == [0, 1, 2]
    assert m["protocol"]["block_m"] == default_block_m(load_manifest(manifest).r_loc_m)
    assert {(r["probe"], r["dims"], r["regime"]) for r in m["results"]} == {
        (p, d, g) for p in ("svm", "logreg", "knn") for d in ("128", "full")
        for g in ("5", "all")}
    assert_seed_summaries(m["results"], 3)
    assert m["checkpoint"]["objective"] == "simclr" and m["checkpoint"]["trained_on_this_manifest"]
    assert "location_results" not in m and "spatial_tasks" not in m
    assert len(m["confusion"]["matrix"]) == len(m["classes"]) >= 2
    # the reference probe's scores, recomputed by hand from its confusion matrix (rows true)
    cm = np.array(m["confusion"]["matrix"], dtype=float)
    assert m["confusion"]["rows"] == "true" and cm.sum() == m["splits"][0]["n_test"]
    present = cm.sum(1) > 0
    f1 = 2 * np.diag(cm) / np.maximum(cm.sum(1) + cm.sum(0), 1)
    assert present.sum() == len(m["splits"][0]["test_classes"])
    assert m["reference"]["macro_f1"] == pytest.approx(f1[present].mean(), abs=1e-9)
    assert m["reference"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-9)
    ref = m["reference"]
    ref_row, = (r for r in m["results"] if (r["probe"], r["dims"], r["regime"])
                == (ref["probe"], ref["dims"], ref["regime"]))
    assert ref_row["macro_f1"]["values"][0] == pytest.approx(ref["macro_f1"], abs=1e-12)
    table = (out / "table.md").read_text()
    assert "| svm | 128 |" in table and "all labels" in table
    printed = capsys.readouterr().out
    assert "| logreg | full |" in printed and "[evaluate] features:" in printed


def test_cli_labels_csv_and_errors(manifest, simclr_ckpt, tmp_path, capsys):
    m = load_manifest(manifest)
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "label"])
        for i, img in enumerate(m.image_id):
            w.writerow([img, "even" if i % 2 else "odd"])
    out = tmp_path / "eval"
    args = ["--checkpoint", str(simclr_ckpt), "--manifest", str(manifest), "--device", "cpu",
            "--seeds", "0", "--regimes", "all", "--probes", "svm", "--dims", "full"]
    assert main([*args, "--out", str(out), "--labels", str(csv_path)]) == 0
    assert json.loads((out / "metrics.json").read_text())["classes"] == ["even", "odd"]

    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,label\nnowhere/x.jpg,sand\n")
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "e2"), "--labels", str(bad)]) == 2
    assert "none of its 1 image_id" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "e3"), "--manifest",
                 str(tmp_path / "missing.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "e4"), "--checkpoint",
                 str(tmp_path / "none.pt")]) == 2
    with pytest.raises(SystemExit):
        main(["--help"])
    helptext = capsys.readouterr().out
    for flag in ("--checkpoint", "--manifest", "--labels", "--out", "--seeds", "--regimes",
                 "--block-m", "--random-split", "--device", "--spatial-tasks",
                 "--no-spatial-tasks"):
        assert flag in helptext


@pytest.mark.parametrize("kind", ["theory", "rbf"])
def test_cli_csp_location_probe(manifest, simclr_ckpt, tmp_path, kind):
    ckpt_path = train_run(manifest, tmp_path / "csp", "--objective", "csp", "--image-encoder",
                          str(simclr_ckpt), "--location-encoder", kind, "--steps", "5",
                          "--seed", "3")
    ckpt = torch.load(ckpt_path, weights_only=True)
    m = load_manifest(manifest)
    emb = location_embeddings(ckpt, m.xy, torch.device("cpu"))
    # the same encoder rebuilt the way the trainer built it (rbf: its seeded centres)
    centres = None
    if kind == "rbf":
        rng = np.random.default_rng(3)
        pick = rng.choice(m.n, min(256, m.n), replace=False)
        centres = torch.as_tensor(m.xy_centred()[pick], dtype=torch.float32)
    ref = make_location_encoder(kind, 128, m.extent_m, centres=centres)
    ref.load_state_dict(ckpt["loc_encoder"])
    with torch.no_grad():
        expected = ref.eval()(torch.as_tensor(m.xy_centred())).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-5)
    if kind == "rbf":
        assert ref.sigma == make_location_encoder("rbf", 128, m.extent_m,
                                                  centres=ckpt["loc_encoder"]["centres"]).sigma

    out = tmp_path / "eval"
    assert main(["--checkpoint", str(ckpt_path), "--manifest", str(manifest), "--out", str(out),
                 "--device", "cpu", "--seeds", "0,1", "--regimes", "all",
                 "--no-spatial-tasks"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    feats = {r["features"] for r in metrics["location_results"]}
    assert feats == {"location", "fused"}
    assert_seed_summaries(metrics["location_results"], 2)
    table = (out / "table.md").read_text()
    assert "| location | svm | full |" in table and "| fused | svm | full |" in table


def test_evaluation_never_overwrites_what_it_did_not_write(manifest, tmp_path, capsys):
    """--out: a new or empty folder; an earlier evaluation only with --overwrite (which removes
    only the files it recorded); a folder holding anything else is never written to."""
    args = ["--baseline", "handcrafted", "--image-size", "32", "--manifest", str(manifest),
            "--seeds", "0", "--regimes", "all", "--probes", "svm", "--dims", "full"]
    out = tmp_path / "eval"
    assert main([*args, "--out", str(out)]) == 0
    record = json.loads((out / "evaluation.json").read_text())
    assert record["state"] == "complete" and "metrics.json" in record["written"]
    notes = out / "notes.md"
    notes.write_text("mine")
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    assert main([*args, "--out", str(out), "--overwrite"]) == 0
    assert notes.read_text() == "mine"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "table.md").write_text("a user's table")
    for extra in ([], ["--overwrite"]):
        assert main([*args, "--out", str(theirs), *extra]) == 2
        assert "never written to" in capsys.readouterr().err
    assert (theirs / "table.md").read_text() == "a user's table"
