"""Constrained decisions: the vectorised decoder against brute force, prevalence thresholds, the CLIs."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_script
from helpers import LIBRARY_MODELS, run_stack, write_runs
from utils.metrics.constraints import (Constraints, ablation, constrained_decisions, cut_margins, decode, parse_constraints,
                               satisfied)
from utils.common.errors import DataError
from utils.metrics.threshold_search import prevalence_thresholds
from utils.metrics.thresholds import binarize, decision_thresholds, fit_thresholds


def brute_force(m, c):
    """Per row: the feasible 0/1 vector with the largest sum of margins, by enumeration."""
    L = m.shape[1]
    sets = np.array(list(itertools.product((0, 1), repeat=L)), dtype=np.uint8)      # (2^L, L)
    ok = satisfied(sets, c)
    scores = m @ sets[ok].T                                                        # (N, feasible)
    return sets[ok][np.argmax(scores, axis=1)]


def random_constraints(rng, L):
    """Disjoint random groups and bounds over L labels that some tag set satisfies."""
    perm = rng.permutation(L)
    exact, at_most, pos = [], [], 0
    for kind in rng.choice(["exact", "at_most", "none"], size=2):
        size = int(rng.integers(1 if kind == "exact" else 2, 4))
        if kind == "none" or pos + size > L:
            continue
        (exact if kind == "exact" else at_most).append(np.sort(perm[pos:pos + size]))
        pos += size
    reachable = L - pos + len(exact) + len(at_most)
    lo = int(rng.integers(0, reachable + 1)) if rng.random() < 0.6 else 0
    hi = int(rng.integers(max(lo, len(exact)), reachable + 1)) if rng.random() < 0.6 else None
    return Constraints(L, tuple(exact), tuple(at_most), lo, hi)


def test_decoder_matches_brute_force_and_satisfies_every_rule():
    rng = np.random.default_rng(0)
    for trial in range(300):
        L = int(rng.integers(1, 7))
        c = random_constraints(rng, L)
        m = rng.normal(size=(40, L))
        got = decode(m, c)
        assert satisfied(got, c).all(), (trial, c)
        np.testing.assert_array_equal(got, brute_force(m, c), err_msg=f"trial {trial}: {c}")


def test_rows_that_obey_the_rules_keep_their_threshold_decisions():
    rng = np.random.default_rng(1)
    p, t = rng.random((500, 6)), rng.random(6) * 0.6
    c = Constraints(6, exactly_one=(np.array([0, 1, 2]),), at_most_one=(np.array([3, 4]),), min_tags=1, max_tags=3)
    plain = binarize(p, t)
    got = constrained_decisions(p, t, "greedy", c)
    keep = satisfied(plain, c)
    assert 0 < keep.sum() < len(p)
    np.testing.assert_array_equal(got[keep], plain[keep])
    assert satisfied(got, c).all()
    # inside an exactly-one group the winner is the largest margin over the thresholds, not the largest p
    margin = p[:, :3] - t[:3]
    np.testing.assert_array_equal(np.argmax(got[:, :3], axis=1), np.argmax(margin, axis=1))


def test_expected_and_prevalence_strategies_take_rules_too():
    rng = np.random.default_rng(2)
    p = rng.random((200, 5))
    c = Constraints(5, exactly_one=(np.array([0, 1]),), max_tags=2)
    dec = binarize(p, strategy="expected")
    np.testing.assert_array_equal(cut_margins(p, dec) >= 0, dec.astype(bool))
    assert satisfied(constrained_decisions(p, None, "expected", c), c).all()
    shares = np.array([0.0, 0.1, 0.25, 0.5, 1.0])
    got = constrained_decisions(p, shares, "prevalence", c)
    assert satisfied(got, c).all()


def test_prevalence_thresholds_match_the_shares():
    rng = np.random.default_rng(3)
    y = (rng.random((300, 4)) < [0.05, 0.3, 0.6, 0.0]).astype(np.uint8)
    shares = fit_thresholds(y, rng.random((300, 4)), "prevalence")
    np.testing.assert_allclose(shares, y.mean(0))
    test = rng.random((77, 4))
    dec = binarize(test, shares, "prevalence")
    np.testing.assert_array_equal(dec.sum(0), np.rint(shares * 77))
    np.testing.assert_array_equal(dec, test >= prevalence_thresholds(test, shares))
    np.testing.assert_array_equal(decision_thresholds(test, shares, "prevalence"), prevalence_thresholds(test, shares))


def test_ablation_scores_each_rule_on_held_out_folds():
    rng = np.random.default_rng(4)
    N = 300
    colour = rng.integers(0, 3, N)
    y = np.zeros((N, 5), np.uint8)
    y[np.arange(N), colour] = 1
    y[:, 3:] = rng.random((N, 2)) < 0.4
    p = np.clip(y + rng.normal(0, 0.45, y.shape), 0, 1)
    folds = np.arange(N) % 3
    fitted = {k: fit_thresholds(y[folds != k], p[folds != k], "greedy") for k in range(3)}
    c = parse_constraints(list("rgbxz"), exactly_one=["r,g,b"], max_tags=2)
    rows = ablation(y, p, fitted, folds, "greedy", c)
    assert [r["rule"] for r in rows] == ["none", "--exactly-one r,g,b", "--max-tags 2", "all"]
    for r, cons in zip(rows, [None, c.parts()[0][1], c.parts()[1][1], c]):
        dec = np.zeros_like(y)
        for k in range(3):
            te = folds == k
            dec[te] = constrained_decisions(p[te], fitted[k], "greedy", cons)
        from utils.metrics.fbeta import fbeta_samples
        want = [fbeta_samples(y[folds == k], dec[folds == k]) for k in range(3)]
        assert r["f2_per_fold"] == pytest.approx(want)
    assert rows[1]["truth_obeys"] == 1.0 and rows[0]["changed"] == 0.0


def test_bad_constraints_name_the_flag():
    labels = ["a", "b", "c", "d"]
    with pytest.raises(DataError, match=r"--exactly-one a,zz: 'zz' not among the labels"):
        parse_constraints(labels, exactly_one=["a,zz"])
    with pytest.raises(DataError, match=r"tag 'b' is already in --exactly-one a,b"):
        parse_constraints(labels, exactly_one=["a,b"], at_most_one=["b,c"])
    with pytest.raises(DataError, match=r"--min-tags 3 is above --max-tags 2"):
        parse_constraints(labels, min_tags=3, max_tags=2)
    with pytest.raises(DataError, match=r"--min-tags 3: the groups allow at most 2"):
        parse_constraints(labels, exactly_one=["a,b"], at_most_one=["c,d"], min_tags=3)
    with pytest.raises(DataError) as e:
        parse_constraints(labels, max_tags=-3)
    assert "must be >= 0" in str(e.value) and "below the 0" not in str(e.value)


# ----------------------------------------------------------------------------- the scripts

@pytest.mark.slow
def test_stack_submission_obeys_the_rules_and_reports_each(tmp_path):
    root, *_ = write_runs(tmp_path, LIBRARY_MODELS[:2])
    out = tmp_path / "out" / "sub.csv"
    r = run_stack("--runs", root / "runs" / "*", "--method", "mean", "lr", "--out", out,
                  "--exactly-one", "a,b", "--min-tags", "2", "--max-tags", "3")
    assert r.returncode == 0, r.stderr
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    tags = sub["tags"].str.split()
    assert tags.map(lambda t: ("a" in t) + ("b" in t) == 1).all() and tags.map(len).between(2, 3).all()
    rep = json.loads((root / "runs" / "stack_report.json").read_text())
    assert [x["rule"] for x in rep["constraints"]] == ["none", "--exactly-one a,b", "--min-tags 2",
                                                       "--max-tags 3", "all"]
    assert "## Constraints" in (root / "runs" / "stack_report.md").read_text() and "## Constraints" in r.stdout
    # the methods' cross-fitted scores are of the constrained decisions
    assert rep["methods"][rep["chosen"]]["f2_per_fold"] == pytest.approx(rep["constraints"][-1]["f2_per_fold"])


@pytest.mark.parametrize("flags, message", [
    (["--exactly-one", "a,nope"], "'nope' not among the labels"),
    (["--min-tags", "3", "--max-tags", "1"], "--min-tags 3 is above --max-tags 1"),
])
@pytest.mark.slow
def test_stack_bad_constraints_exit_2_and_write_nothing(tmp_path, flags, message):
    root, *_ = write_runs(tmp_path, LIBRARY_MODELS[:1])
    out = tmp_path / "out" / "sub.csv"
    r = run_stack("--runs", root / "runs" / "*", "--method", "mean", "--out", out, *flags)
    assert r.returncode == 2 and message in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_submission_obeys_the_rules(trained, tmp_path):  # noqa: F811
    base, data, runs = trained
    sub = tmp_path / "sub.csv"
    run_script("predict.py", "--run", runs / "f*", "--submission", sub, "--exactly-one", "a,b", "--max-tags", "1")
    tags = pd.read_csv(sub, dtype=str, keep_default_na=False)["tags"].str.split()
    assert (tags.map(len) == 1).all() and tags.map(lambda t: t[0] in ("a", "b")).all()
    r = run_script("predict.py", "--run", runs / "f*", "--submission", tmp_path / "bad.csv",
                   "--at-most-one", "a,x", check=False)
    assert r.returncode == 2 and "--at-most-one a,x: 'x' not among the labels" in r.stderr
    assert not (tmp_path / "bad.csv").exists()
