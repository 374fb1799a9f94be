"""The one language of the option strings people type (README "Option strings").

    asl:gamma_neg=4,clip=0.05              one item: a name, `:`, then `,`-separated key=value options
    rotate:15                              a bare value fills the item's first option
    hflip;erase:p=0.5;randaug:n=2,m=9      a list: items are `;`-separated
    epochs=2,size=128;epochs=8,size=224    items without a name (stages): only options

`;` separates items, `,` separates an item's options, `:` follows an item's name. Every
value goes through parse_value: true/false/yes/no/on/off are booleans, none/null is None,
numbers become int or float, anything else stays a string. Where a boolean is expected
1 and 0 count too (as_bool). Every error is a DataError naming the flag.
"""
import math

from utils.common.errors import DataError

ITEM_SEP, OPTION_SEP, NAME_SEP = ";", ",", ":"
TRUE, FALSE, NONE = ("true", "yes", "on"), ("false", "no", "off"), ("none", "null")
_OLD_SEPARATORS = str.maketrans({ITEM_SEP: OPTION_SEP, OPTION_SEP: ITEM_SEP})


def parse_value(text):
    """The one conversion of an option value string: -> bool, None, int, float or str (stripped).

    A value that is not a string (from a JSON/YAML config) is returned unchanged.
    """
    if not isinstance(text, str):
        return text
    low = text.strip().lower()
    if low in TRUE or low in FALSE:
        return low in TRUE
    if low in NONE:
        return None
    for kind in (int, float):
        try:
            return kind(low)
        except ValueError:
            pass
    return text.strip()


def as_bool(value, what):
    """A boolean option: parse_value's booleans, or 1/0. DataError naming `what` otherwise.

    what: the value as the user wrote it, e.g. "--epochs 'x'" or "epochs='x'" (messages start with it).
    """
    value = parse_value(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DataError(f"{what} is not a boolean (true/false, yes/no, on/off, 1/0)")


def as_int(value, what):
    """An integer option (a float equal to an integer counts). DataError naming `what` otherwise."""
    value = parse_value(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{what} is not an integer")
    return value


def as_float(value, what, optional=False):
    """A finite number option (None too with optional). DataError naming `what` otherwise."""
    value = parse_value(value)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{what} is not a number{' or none' if optional else ''}")
    return float(value)


def as_str(value, what, choices):
    """One of `choices` (case-insensitive). DataError naming `what` and listing them otherwise."""
    text = str(value).strip().lower()
    if text not in choices:
        raise DataError(f"{what} is not one of {', '.join(choices)}")
    return text


def split_items(spec):
    """`a;b;c` -> ['a', 'b', 'c'] (stripped; empty items and a trailing `;` dropped)."""
    return [s.strip() for s in str(spec or "").split(ITEM_SEP) if s.strip()]


def split_options(text):
    """`a,b,c` -> ['a', 'b', 'c'] (stripped, empty parts dropped): an item's options, or a list of tags."""
    return [s.strip() for s in str(text or "").split(OPTION_SEP) if s.strip()]


def parse_options(text, flag, positional=()):
    """`k1=v1,k2=v2` -> {k1: parse_value(v1), ...} (keys lower-cased).

    A bare value (no `=`) is given the next name of `positional`, in order. DataError naming
    `flag` for an empty key or value, a repeated key, or a bare value with no name left.
    """
    opts, free = {}, list(positional)
    for part in split_options(text):
        key, eq, value = part.partition("=")
        if not eq:
            if not free:
                raise DataError(f"{flag} {text!r}: value {part!r} needs a name (write key=value)")
            key, value = free.pop(0), part
        key = key.strip().lower()
        if not key or not value.strip():
            raise DataError(f"{flag} {text!r}: empty option in {part!r} (write key=value)")
        if key in opts:
            raise DataError(f"{flag} {text!r}: option {key!r} given twice")
        if key in free:
            free.remove(key)
        opts[key] = parse_value(value)
    return opts


def parse_item(text, flag, positional=()):
    """One item, `name[:options]` or bare `options` -> (name, {option: value}); name '' when absent.

    DataError naming `flag` when the item holds a `;` (a list where one item is expected).
    """
    text = str(text).strip()
    if ITEM_SEP in text:
        raise DataError(f"{flag} {text!r}: takes one item; ';' separates the items of a list")
    name, colon, rest = text.partition(NAME_SEP)
    if not colon and "=" in name:
        return "", parse_options(text, flag)
    name = name.strip().lower()
    if not name or OPTION_SEP in name or "=" in name:
        raise DataError(f"{flag} {text!r}: write name or name:key=value,key=value")
    return name, parse_options(rest, flag, positional)


def parse_items(spec, flag, positional=lambda name: ()):
    """A `;`-separated list -> [(name, {option: value}), ...]; positional(name): its bare-value names."""
    out = []
    for text in split_items(spec):
        name = text.partition(NAME_SEP)[0].strip().lower()
        out.append(parse_item(text, flag, positional(name)))
    return out


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


def old_separators(spec):
    """An option string written with the former roles of `,` and `;` swapped, in today's form."""
    return str(spec).translate(_OLD_SEPARATORS)


def refuse_old_list(flag, spec, parse):
    """Refuse a list typed in the former spelling (`,` between items, `;` inside one).

    Called when parsing `spec` failed: if its separators swapped parse cleanly with
    `parse` (text -> anything, raising DataError), raise a DataError naming `flag` that
    shows that new form; otherwise return, and the caller reports its own error.
    """
    new = old_separators(spec)
    if new == spec:
        return
    try:
        parse(new)
    except DataError:
        return
    raise DataError(f"{flag} {spec!r}: ';' now separates the items of a list and ',' an item's "
                    f"options; write {flag} '{new}'")
