"""The `name:key=value,...` option strings people type for --loss, --sampler and --aug.

    asl:gamma_neg=4,clip=0.05        one loss with two options
    oversample:t=0.05                one sampler
    rotate:15                        a bare value fills the item's first option
    colorswap:rb;remap=blue/red      inside an --aug list, options are `;`-separated

Values become int, float, bool (true/false), None (none) or stay strings.
"""
from utils.common.errors import DataError


def parse_value(text):
    """Turn an option value typed on the command line into int, float, bool, None or str."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(low)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec, sep=",", positional=()):
    """Split `name:opt1=v1<sep>opt2=v2` into (name, {opt: value}).

    A bare value (no `=`) is given the next name of `positional`, in order
    (`rotate:15` with positional=("deg",) -> ("rotate", {"deg": 15})).
    Raises DataError for an empty name, an empty option, a repeated option or
    more bare values than `positional` names.
    """
    name, _, rest = str(spec).strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise DataError(f"empty name in option string {spec!r}")
    opts, free = {}, list(positional)
    for part in rest.split(sep) if rest.strip() else []:
        key, eq, value = part.partition("=")
        if not eq:
            if not free:
                raise DataError(f"{spec!r}: value {part!r} needs a name (write key=value)")
            key, value = free.pop(0), part
        key = key.strip().lower()
        if not key or not value.strip():
            raise DataError(f"{spec!r}: empty option in {part!r} (write key=value)")
        if key in opts:
            raise DataError(f"{spec!r}: option {key!r} given twice")
        if key in free:
            free.remove(key)
        opts[key] = parse_value(value)
    return name, opts


def check_choice(kind, name, choices):
    """Raise DataError unless `name` is one of `choices`; the message lists them."""
    if name not in choices:
        raise DataError(f"unknown {kind} {name!r}; valid: {', '.join(choices)}")


def merge_options(kind, name, given, defaults):
    """Return `defaults` updated with `given`; DataError names any option not in `defaults`."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "(none)"
        raise DataError(f"{kind} {name!r}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
    return {**defaults, **given}
