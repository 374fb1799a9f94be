"""The --method names (level-1 ensembles and level-2 stackers), their options and defaults,
and the parsing of 'NAME[:key=value,...]' specs into combiner factories."""
from utils.common.errors import DataError
from utils.common.options import as_bool, as_float, as_int, parse_item, split_items
from utils.metrics.fbeta import ZERO_DIVISION
from utils.stack.ensemble import LEVEL1
from utils.stack.stackers import LGBM, NN, XGB, LogReg, RidgeCorr, RidgeLabel

_SELECT = dict(init=3, size=25, replace=True, patience=10, bags=0, frac=0.5, restarts=0, pool=0, objective="f2")
_BEAM = dict(width=5, size=10, replace=True, patience=3, objective="f2")
_TREES = dict(trees=100, lr=0.1, patience=10, logits=False)

# name -> (class, default params). Level-1 first, then level-2; `prior` is the baseline.
METHODS = {
    "prior": (LEVEL1["prior"], {}),
    "best": (LEVEL1["best"], {}),
    "mean": (LEVEL1["mean"], {}),
    "bag": (LEVEL1["bag"], {}),
    "topk": (LEVEL1["topk"], dict(k=5)),
    "select": (LEVEL1["select"], _SELECT),
    "select-bag": (LEVEL1["select"], {**_SELECT, "bags": 10}),
    "select-soft": (LEVEL1["select"], {**_SELECT, "objective": "soft"}),
    "select-restarts": (LEVEL1["select"], {**_SELECT, "restarts": 10, "replace": False}),
    "select-model": (LEVEL1["select-model"], dict(init=3, size=25, replace=True, patience=10, objective="f2")),
    "beam": (LEVEL1["beam"], _BEAM),
    "beam-norep": (LEVEL1["beam"], {**_BEAM, "replace": False}),
    "lr": (LogReg, dict(C=1.0, logits=False)),
    "ridge": (RidgeLabel, dict(alpha=0.0, logits=False)),
    "ridge-corr": (RidgeCorr, dict(alpha=0.0, logits=False)),
    "xgb": (XGB, {**_TREES, "depth": 2}),
    "lgbm": (LGBM, {**_TREES, "leaves": 7}),
    "nn": (NN, dict(hidden=32, alpha=1e-3, iters=100, logits=False)),
}
LEVEL2 = ("lr", "ridge", "ridge-corr", "xgb", "lgbm", "nn")


def _typed(name, key, value, default):
    """An option value (parse_value's) checked against its default's type; DataError otherwise."""
    what = f"--method {name}: {key}={value!r}"
    if isinstance(default, bool):
        return as_bool(value, what)
    if isinstance(default, int):
        return as_int(value, what)
    if isinstance(default, float):
        return as_float(value, what)
    return str(value)


def parse_method(spec, logits=False):
    """'NAME[:key=value,...]' -> (name, class, params). Raises DataError naming the valid choices.

    logits: default of the stackers' ``logits`` option (--logits).
    """
    name, opts = parse_item(spec, "--method")
    if name not in METHODS:
        raise DataError(f"--method {name!r}: unknown method; valid: {', '.join(METHODS)}")
    cls, defaults = METHODS[name]
    params = dict(defaults)
    if "logits" in params:
        params["logits"] = bool(logits)
    for key, value in opts.items():
        if key not in defaults:
            raise DataError(f"--method {name}: invalid option {key!r}; it takes "
                            f"{', '.join(f'{k}={v}' for k, v in defaults.items()) or 'no options'}")
        params[key] = _typed(name, key, value, defaults[key])
    if params.get("objective", "f2") not in ("f2", "soft"):
        raise DataError(f"--method {name}: objective must be f2 or soft")
    return name, cls, params


def split_methods(specs):
    """--method values -> one method spec per item: each value may hold several, `;`-separated."""
    return [item for spec in specs for item in split_items(spec)]


def method_factory(spec, seed=0, logits=False, beta=2.0, zero_division=ZERO_DIVISION):
    """A zero-argument callable making a fresh, unfitted combiner for ``spec``.

    beta, zero_division: of the F-beta that selection methods maximise.
    """
    _, cls, params = parse_method(spec, logits)
    return lambda: cls(seed=seed, beta=beta, zero_division=zero_division, **params)
