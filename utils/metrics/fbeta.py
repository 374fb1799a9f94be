"""F-beta metrics on 0/1 tag matrices: per image (the competition's F2 over images) and per label.

The competition metric is F2 averaged over images (Kaggle Planet scored with
``sklearn.metrics.fbeta_score(y, pred, beta=2, average='samples')``). Every function
here takes (N, L) arrays: N images, L labels, values 0/1 (bool or int accepted) and
returns the same numbers as scikit-learn's ``fbeta_score`` with the same
``zero_division``, only faster and without warnings.

F-beta of one row (or column) with counts tp, fp, fn is

    (1 + beta^2) tp / ((1 + beta^2) tp + beta^2 fn + fp)

and is ill-defined only when tp + fp + fn = 0: no true tag and no predicted tag.
Such a case scores ``zero_division``. The project's default is 1.0: predicting
"no tag" for an image that has none is a perfect answer. (Planet images always had
at least one weather tag, so its leaderboard never met the case; scikit-learn's own
default, 'warn', scores it 0.) ``zero_division=np.nan`` leaves such rows out of the
average, as scikit-learn does.
"""
import numpy as np

ZERO_DIVISION = 1.0


def _check(y_true, y_pred, name="y_pred"):
    """Return (y_true, y_pred) as float64 2-D arrays of one shape, or raise ValueError."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and {name} {y_pred.shape} must be the same (N, L) shape")
    return y_true, y_pred


def fbeta_from_counts(tp, fp, fn, beta=2.0, zero_division=ZERO_DIVISION):
    """Elementwise F-beta from arrays of true positives, false positives, false negatives.

    Counts may be fractional (soft counts). Where tp + fp + fn == 0 the result is
    ``zero_division``. Returns a float64 array of the broadcast shape.
    """
    b2 = beta * beta
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    num = (1.0 + b2) * tp
    den = num + b2 * fn + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        f = num / den
    return np.where(den > 0, f, zero_division)


def _mean(values):
    """Mean that skips NaN (rows scored zero_division=nan), NaN if nothing is left."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    return float(values[keep].mean()) if keep.any() else float("nan")


def fbeta_per_sample(y_true, y_pred, beta=2.0, zero_division=ZERO_DIVISION):
    """F-beta of each image (row). y_true, y_pred: (N, L) 0/1. Returns float64 (N,)."""
    y_true, y_pred = _check(y_true, y_pred)
    tp = (y_true * y_pred).sum(1)
    fp = y_pred.sum(1) - tp
    fn = y_true.sum(1) - tp
    return fbeta_from_counts(tp, fp, fn, beta, zero_division)


def fbeta_samples(y_true, y_pred, beta=2.0, zero_division=ZERO_DIVISION):
    """Sample-averaged F-beta: the competition metric. (N, L) 0/1 inputs -> float.

    Equals ``sklearn.metrics.fbeta_score(y_true, y_pred, beta=beta,
    average='samples', zero_division=zero_division)``.
    """
    return _mean(fbeta_per_sample(y_true, y_pred, beta, zero_division))


def fbeta_per_label(y_true, y_pred, beta=2.0, zero_division=ZERO_DIVISION):
    """F-beta of each label (column) over all images. (N, L) 0/1 inputs -> float64 (L,).

    Equals ``fbeta_score(..., average=None, zero_division=zero_division)``.
    """
    y_true, y_pred = _check(y_true, y_pred)
    tp = (y_true * y_pred).sum(0)
    fp = y_pred.sum(0) - tp
    fn = y_true.sum(0) - tp
    return fbeta_from_counts(tp, fp, fn, beta, zero_division)


