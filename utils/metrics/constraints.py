"""Constrained decisions: tag sets that obey rules the data are known to follow.

Some tag sets have structure: every Planet image has exactly one of clear, cloudy,
haze, partly_cloudy; every apparel photo exactly one colour and one garment. Plain
per-label thresholds ignore it. A ``Constraints`` holds such rules:

- ``exactly_one``: groups of tags of which each image has exactly one;
- ``at_most_one``: groups of tags of which each image has at most one;
- ``min_tags`` / ``max_tags``: bounds on the number of tags per image.

``decode`` applies them to the *margins* m = p - t of the probabilities over their
thresholds (the decisions the thresholds make are exactly m >= 0). It returns, per
image, the feasible tag set with the largest sum of margins:

- in an exactly-one group the tag with the largest margin is kept, the others dropped;
- in an at-most-one group only the tag with the largest margin may stay;
- the other tags are kept while their margin is >= 0, then the best by margin are
  added (to reach ``min_tags``) or kept (to stay within ``max_tags``).

Why margins, not raw probabilities, inside a group: the thresholds are the fitted
per-label trade-off between a miss and a false alarm, so a rare tag whose probability
is above its low threshold is "more decided" than a frequent tag below its high one.
Decoding by margin is also a repair: an image whose threshold decisions already obey
every rule keeps them unchanged; only the images that break a rule change.

The decoders are pure numpy and vectorised over images (no loop over rows).
"""
from dataclasses import dataclass

import numpy as np

from utils.common.errors import DataError
from utils.common.options import split_items, split_options
from utils.metrics.fbeta import ZERO_DIVISION, fbeta_samples
from utils.metrics.thresholds import binarize, decision_thresholds


@dataclass(frozen=True)
class Constraints:
    """Rules on each image's tag set, as label indices.

    exactly_one, at_most_one: tuples of int arrays (disjoint groups of label indices);
    min_tags: int >= 0; max_tags: int or None (no bound); n_labels: L.
    """
    n_labels: int
    exactly_one: tuple = ()
    at_most_one: tuple = ()
    min_tags: int = 0
    max_tags: int = None
    names: tuple = ()          # a readable name per rule, in the order of ``parts``

    def __bool__(self):
        return bool(self.exactly_one or self.at_most_one or self.min_tags or self.max_tags is not None)

    def parts(self):
        """[(name, Constraints holding that one rule)] for scoring each rule alone."""
        out, i = [], 0
        for g in self.exactly_one:
            out.append((self.names[i], Constraints(self.n_labels, exactly_one=(g,)))); i += 1
        for g in self.at_most_one:
            out.append((self.names[i], Constraints(self.n_labels, at_most_one=(g,)))); i += 1
        if self.min_tags:
            out.append((self.names[i], Constraints(self.n_labels, min_tags=self.min_tags))); i += 1
        if self.max_tags is not None:
            out.append((self.names[i], Constraints(self.n_labels, max_tags=self.max_tags)))
        return out


def add_constraint_arguments(group):
    """Add --exactly-one, --at-most-one, --min-tags, --max-tags to an argparse group."""
    group.add_argument("--exactly-one", action="append", default=[], metavar="TAG,TAG,...[;TAG,...]",
                       help="every image has exactly one of these tags (comma-separated); several groups "
                            "are ';'-separated or the flag repeated (README \"Option strings\"); the tag "
                            "with the largest margin over its threshold wins (default: none)")
    group.add_argument("--at-most-one", action="append", default=[], metavar="TAG,TAG,...[;TAG,...]",
                       help="every image has at most one of these tags; several groups ';'-separated or the "
                            "flag repeated (default: none)")
    group.add_argument("--min-tags", type=int, default=0, metavar="N",
                       help="at least N tags per image: the best by margin over their thresholds are added "
                            "(default: 0)")
    group.add_argument("--max-tags", type=int, default=None, metavar="N",
                       help="at most N tags per image: the best by margin over their thresholds are kept "
                            "(default: no bound)")


def check_constraint_args(parser, args):
    """argparse-level checks (exit 2 through parser.error): counts in range, min <= max."""
    if args.min_tags < 0 or (args.max_tags is not None and args.max_tags < 0):
        parser.error("--min-tags and --max-tags must be >= 0")
    if args.max_tags is not None and args.min_tags > args.max_tags:
        parser.error(f"--min-tags {args.min_tags} is above --max-tags {args.max_tags}")


def parse_constraints(labels, exactly_one=(), at_most_one=(), min_tags=0, max_tags=None):
    """Constraints over ``labels`` from the flags' strings. Raises DataError naming the flag.

    exactly_one, at_most_one: lists of 'tag,tag,...' strings, each possibly several groups
    'a,b;c,d' (`;` between groups, README "Option strings"). Errors: a tag that is
    not a label, a group of fewer than two tags (exactly-one of one tag is allowed: it
    forces the tag), a tag in two groups, min_tags > max_tags, or rules no tag set can
    satisfy (more exactly-one groups than max_tags, min_tags above what the groups allow).
    """
    labels = list(labels)
    index = {t: i for i, t in enumerate(labels)}
    problems, seen, groups, names = [], {}, {"--exactly-one": [], "--at-most-one": []}, []
    for flag, specs in (("--exactly-one", exactly_one), ("--at-most-one", at_most_one)):
        for spec in (group for value in specs for group in split_items(value)):
            tags = split_options(spec)
            unknown = [t for t in tags if t not in index]
            if unknown:
                problems.append(f"{flag} {spec}: {', '.join(map(repr, unknown))} not among the labels "
                                f"({' '.join(labels)})")
                continue
            if len(set(tags)) != len(tags) or not tags or (flag == "--at-most-one" and len(tags) < 2):
                problems.append(f"{flag} {spec}: give distinct tags (at least two for --at-most-one)")
                continue
            for t in tags:
                if t in seen:
                    problems.append(f"{flag} {spec}: tag {t!r} is already in {seen[t]}; groups must not overlap")
                seen.setdefault(t, f"{flag} {spec}")
            groups[flag].append(np.array([index[t] for t in tags]))
            names.append(f"{flag} {','.join(tags)}")
    if min_tags < 0 or (max_tags is not None and max_tags < 0):
        problems.append("--min-tags and --max-tags must be >= 0")
    elif max_tags is not None and min_tags > max_tags:
        problems.append(f"--min-tags {min_tags} is above --max-tags {max_tags}")
    n_exact = len(groups["--exactly-one"])
    if max_tags is not None and n_exact > max_tags >= 0:  # a negative bound is reported above, once
        problems.append(f"--max-tags {max_tags} is below the {n_exact} --exactly-one group(s), each of which "
                        f"needs a tag")
    reachable = len(labels) - len(seen) + n_exact + len(groups["--at-most-one"])
    if min_tags > reachable:
        problems.append(f"--min-tags {min_tags}: the groups allow at most {reachable} tag(s) per image")
    if problems:
        raise DataError("bad constraints:\n" + "\n".join(f"  - {p}" for p in problems))
    names += ([f"--min-tags {min_tags}"] if min_tags else []) + ([f"--max-tags {max_tags}"] if max_tags is not None
                                                               else [])
    return Constraints(len(labels), tuple(groups["--exactly-one"]), tuple(groups["--at-most-one"]),
                       int(min_tags), None if max_tags is None else int(max_tags), tuple(names))


# ----------------------------------------------------------------------------- decoders

def _group_winners(m, group):
    """(N, L) bool: the largest-margin tag of ``group`` per row (first on ties)."""
    win = np.zeros(m.shape, dtype=bool)
    win[np.arange(len(m)), group[np.argmax(m[:, group], axis=1)]] = True
    return win


def decode(margins, constraints):
    """The feasible tag set with the largest sum of margins, per image.

    margins: (N, L) float, p - t (decisions without rules: margins >= 0);
    constraints: Constraints (assumed satisfiable, as ``parse_constraints`` checks).
    Returns uint8 (N, L). Exact: the best of each exactly-one group is forced, the
    best of each at-most-one group competes with the free tags, and the number of
    optional tags kept is the count of non-negative margins clipped to what
    ``min_tags`` and ``max_tags`` leave.
    """
    m = np.asarray(margins, dtype=np.float64)
    N, L = m.shape
    forced = np.zeros((N, L), dtype=bool)
    eligible = np.ones((N, L), dtype=bool)
    for g in constraints.exactly_one:
        win = _group_winners(m, g)
        forced |= win
        eligible[:, g] = False
    for g in constraints.at_most_one:
        eligible[:, g] = _group_winners(m, g)[:, g]
    n_forced = len(constraints.exactly_one)
    n_eligible = int(eligible[0].sum()) if N else 0        # the same on every row
    hi = n_eligible if constraints.max_tags is None else min(n_eligible, constraints.max_tags - n_forced)
    lo = min(max(constraints.min_tags - n_forced, 0), hi)
    k = np.clip((eligible & (m >= 0)).sum(1), lo, hi)       # optional tags kept per row
    key = np.where(eligible, m, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(L)[None, :].repeat(N, 0), axis=1)
    return (forced | (eligible & (rank < k[:, None]))).astype(np.uint8)


def satisfied(decisions, constraints):
    """(N,) bool: whether each row of 0/1 ``decisions`` (N, L) obeys every rule."""
    d = np.asarray(decisions).astype(bool)
    ok = np.ones(len(d), dtype=bool)
    for g in constraints.exactly_one:
        ok &= d[:, g].sum(1) == 1
    for g in constraints.at_most_one:
        ok &= d[:, g].sum(1) <= 1
    n = d.sum(1)
    ok &= n >= constraints.min_tags
    if constraints.max_tags is not None:
        ok &= n <= constraints.max_tags
    return ok


def cut_margins(probs, decisions):
    """(N, L) margins for decisions made without thresholds (strategy 'expected').

    Each image's cut is halfway between its lowest chosen and its highest unchosen
    probability (the 'expected' sets are always an image's k most probable tags), so
    margins >= 0 reproduce ``decisions`` and rank tags by probability.
    """
    P = np.asarray(probs, dtype=np.float64)
    d = np.asarray(decisions).astype(bool)
    low_in = np.where(d, P, np.inf).min(1)
    high_out = np.where(d, -np.inf, P).max(1)
    cut = np.where(np.isinf(low_in), np.nextafter(high_out, np.inf),
                   np.where(np.isinf(high_out), low_in, 0.5 * (low_in + high_out)))
    return P - cut[:, None]


def constrained_decisions(probs, fitted, strategy, constraints=None, beta=2.0, zero_division=ZERO_DIVISION):
    """0/1 decisions (N, L) uint8 of ``strategy`` with ``fitted`` thresholds, then the rules.

    probs: (N, L); fitted: what ``utils.metrics.thresholds.fit_thresholds`` returned.
    Without constraints this is ``binarize``.
    """
    decided = binarize(probs, fitted, strategy, beta, zero_division)
    if not constraints:
        return decided
    thr = decision_thresholds(probs, fitted, strategy)
    P = np.asarray(probs, dtype=np.float64)
    return decode(P - thr if thr is not None else cut_margins(P, decided), constraints)


# ----------------------------------------------------------------------------- scoring

def ablation(y, held, fold_fitted, folds, strategy, constraints, beta=2.0, zero_division=ZERO_DIVISION):
    """Cross-fitted F-beta without rules, with each rule alone, and with all of them.

    y: (N, L) 0/1; held: (N, L) held-out probabilities; fold_fitted: {fold id: what
    fit_thresholds returned on the other folds}; folds: (N,). The rules themselves
    fit nothing, so each fold is decided with the thresholds fitted without it.
    Returns a list of dicts: rule, f2_per_fold, mean, std, f2_pooled, changed (share
    of images whose tag set differs from no rules), violations (share of images whose
    unconstrained tag set breaks the rule).
    """
    ids = np.unique(folds)
    base = np.zeros(y.shape, dtype=np.uint8)
    for k in ids:
        te = folds == k
        base[te] = constrained_decisions(held[te], fold_fitted[k], strategy, None, beta, zero_division)
    rows = []
    for name, c in [("none", None)] + constraints.parts() + ([("all", constraints)] if len(constraints.parts()) > 1
                                                            else []):
        dec = base if c is None else np.zeros_like(base)
        if c is not None:
            for k in ids:
                te = folds == k
                dec[te] = constrained_decisions(held[te], fold_fitted[k], strategy, c, beta, zero_division)
        scores = [fbeta_samples(y[folds == k], dec[folds == k], beta, zero_division) for k in ids]
        rows.append({"rule": name, "f2_per_fold": [float(s) for s in scores], "mean": float(np.mean(scores)),
                     "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                     "f2_pooled": float(fbeta_samples(y, dec, beta, zero_division)),
                     "changed": float((dec != base).any(1).mean()),
                     "violations": 0.0 if c is None else float((~satisfied(base, c)).mean()),
                     "truth_obeys": 1.0 if c is None else float(satisfied(y, c).mean())})
    return rows


def render_ablation(rows, method):
    """Markdown lines of an ``ablation`` table for ``method``."""
    lines = ["", "## Constraints", "",
             f"Method `{method}`: each fold decided with thresholds fitted on the other folds, then the rules "
             "(which fit nothing). violates: share of images whose threshold decisions break the rule; "
             "changed: share whose tag set the rule changes; truth obeys: share of training images whose true "
             "tags obey it.", "",
             "| rule | cross-fitted F2 | ± std | Δ vs none | pooled F2 | violates | changed | truth obeys |",
             "|---|---|---|---|---|---|---|---|"]
    none = rows[0]["mean"]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['mean']:.4f} | {r['std']:.4f} | {r['mean'] - none:+.4f} | "
                     f"{r['f2_pooled']:.4f} | {r['violations']:.3f} | {r['changed']:.3f} | {r['truth_obeys']:.3f} |")
    return lines


__all__ = ["Constraints", "add_constraint_arguments", "check_constraint_args", "parse_constraints", "decode",
           "satisfied", "cut_margins", "constrained_decisions", "ablation", "render_ablation"]
