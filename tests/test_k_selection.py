"""The choice of k (--k auto) against a known answer: constructed embeddings whose clusters are
known, every criterion of ssl/mapping/clusters.py CRITERIA, its k and the adjusted Rand index of
the clustering at that k. The study on the simulator's surveys is benchmarks/k_selection.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from seafloor_ssl.mapping import clusters
from seafloor_ssl.mapping.clusters import (
    CRITERIA,
    DEFAULT_CRITERION,
    ClusterError,
    cluster,
    neighbour_mean,
)
from sklearn.metrics import adjusted_rand_score

K_RANGE = (2, 8)  # enough to see 6, and fast
SIZES = [80, 60, 45, 35, 25, 15]  # six habitats of different sizes


def _blobs(centres: np.ndarray, spread: float, seed: int):
    """Images around the centres (SIZES of each) and the neighbour pairs of a survey whose
    habitats are patches: every image paired with 4 random images of its own habitat."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.normal(size=(s, centres.shape[1]))
                        for c, s in zip(centres, SIZES, strict=True)])
    truth = np.repeat(np.arange(len(SIZES)), SIZES)
    anchor, positive = [], []
    for j in range(len(SIZES)):
        members = np.flatnonzero(truth == j)
        for i in members:
            for o in rng.choice(members, 4, replace=False):
                if o != i:
                    anchor.append(i)
                    positive.append(o)
    return X.astype(np.float32), truth, (np.array(anchor), np.array(positive))


def _six_separated():
    centres = np.random.default_rng(0).normal(size=(6, 16))
    return _blobs(centres, 0.05, seed=1)


def _three_pairs():
    """A hierarchy: three well-separated pairs of close habitats (the silhouette's trap: two
    habitats of a pair look like one next to the other pairs)."""
    rng = np.random.default_rng(2)
    parents = rng.normal(size=(3, 16))
    off = rng.normal(size=(3, 16))
    off *= 0.25 / np.linalg.norm(off, axis=1, keepdims=True)
    return _blobs(np.concatenate([parents + off, parents - off]), 0.05, seed=3)


# criterion -> (k, ARI) on the two constructed cases, the known answers
SEPARATED = {name: (6, 1.0) for name in CRITERIA}
THREE_PAIRS = {"silhouette": 3, "gmm_bic": 6, "gap": 3,
               "silhouette_spatial": 3, "gmm_bic_spatial": 6, "gap_spatial": 6}


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    """B = 4 references for the gap statistic, and one BLAS/OpenMP thread: k-means of a few
    hundred points is 50 times slower with two threads on a loaded two-core machine."""
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(clusters, "GAP_REFERENCES", 4)
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def separated():
    return _six_separated()


@pytest.fixture(scope="module")
def three_pairs():
    return _three_pairs()


@pytest.mark.parametrize("name", list(CRITERIA))
def test_every_criterion_finds_six_separated_habitats(separated, name):
    X, truth, graph = separated
    res = cluster(X, None, k_range=K_RANGE, criterion=name, graph=graph)
    assert res.k == 6 and res.k_criterion == name, res.scores
    assert adjusted_rand_score(truth, res.labels) == 1.0
    assert sorted(res.scores) == list(range(K_RANGE[0], K_RANGE[1] + 1))


def _six_noisy():
    """Six habitats whose images scatter widely (each image alone is a poor guide) in patches:
    the neighbours within r_loc share the habitat, so their mean is a good one."""
    centres = np.random.default_rng(0).normal(size=(6, 16))
    return _blobs(centres, 0.6, seed=1)


# the silhouette of the single images merges two habitats; averaged over neighbours it does not
NOISY = {name: 6 for name in CRITERIA} | {"silhouette": 5}


@pytest.fixture(scope="module")
def noisy():
    return _six_noisy()


# each case: its known k per criterion, and the ARI of a k other than 6 (k = 3 of the three
# pairs merges each pair: every habitat is found, but two at a time; k = 5 merges two of six)
CASES = {"three_pairs": (THREE_PAIRS, (0.5, 0.7)), "noisy": (NOISY, (0.9, 1.0))}


@pytest.mark.parametrize("name", list(CRITERIA))
@pytest.mark.parametrize("case", list(CASES))
def test_known_answers(case, name, request):
    X, truth, graph = request.getfixturevalue(case)
    known, (lo, hi) = CASES[case]
    res = cluster(X, None, k_range=K_RANGE, criterion=name, graph=graph)
    ari = adjusted_rand_score(truth, res.labels)
    assert res.k == known[name], res.scores
    assert ari == 1.0 if res.k == 6 else lo < ari < hi


def test_the_default_is_the_studys_best_and_falls_back_without_pairs(noisy):
    """The default is the criterion REPRODUCTION.md's k-selection table found best (bold), as
    its text says; without the neighbour pairs a spatial default uses its plain criterion."""
    text = (Path(__file__).resolve().parents[1] / "REPRODUCTION.md").read_text()
    section = text[text.index("<!-- k-selection: begin -->"):
                   text.index("<!-- k-selection: end -->")]
    bold = re.findall(r"^\| \*\*(\w+)\*\* \|", section, flags=re.M)
    assert bold == [DEFAULT_CRITERION], bold
    assert f"The default of `--k-criterion` is `{DEFAULT_CRITERION}`." in section
    X, truth, graph = noisy
    res = cluster(X, None, k_range=K_RANGE, graph=graph)
    assert res.k_criterion == DEFAULT_CRITERION and res.k == NOISY[DEFAULT_CRITERION]
    plain = cluster(X, None, k_range=K_RANGE)
    assert plain.k_criterion == DEFAULT_CRITERION.removesuffix("_spatial")
    assert plain.k == NOISY[plain.k_criterion]


def test_a_k_at_the_top_of_the_range_is_said(separated):
    X, _, graph = separated
    res = cluster(X, None, k_range=(2, 4), criterion="silhouette_spatial", graph=graph)
    assert res.k == 4 and "the largest k tried" in res.criterion, res.criterion
    inside = cluster(X, None, k_range=K_RANGE, criterion="silhouette_spatial", graph=graph)
    assert inside.k == 6 and "largest k tried" not in inside.criterion


def test_given_k_and_refusals(separated):
    X, _, graph = separated
    res = cluster(X, 4, criterion="gap")  # a given k ignores the criterion
    assert res.k == 4 and res.k_criterion == "" and res.scores == {}
    with pytest.raises(ClusterError, match="unknown k criterion 'elbow'"):
        cluster(X, None, criterion="elbow")
    with pytest.raises(ClusterError, match="needs the neighbour pairs"):
        cluster(X, None, criterion="silhouette_spatial")


def test_neighbour_mean_averages_over_the_pairs_graph():
    Z = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    got = neighbour_mean(Z, np.array([0]), np.array([1]))  # 0 - 1 neighbours, 2 alone
    assert np.allclose(got, [[1.0, 0.0], [1.0, 0.0], [0.0, 4.0]])
