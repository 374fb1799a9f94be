"""What stack.py (and the explorer) say about the models left out of the library: the models
that only lack runs of some folds in one line, with their count and names and the command that
completes them; a model with runs that are there but not usable in lines of its own."""
import shlex

_NOT_KEPT = {"--fold", "--name", "--resume"}  # a fold's own: the rest of a run's flags make the same model


def fold_command(run, folds):
    """The command that trains ``folds`` of ``run``'s model: train.py with the flags recorded in its
    config.json (argv) and --fold F; a linear probe's own tool, which fits every fold."""
    cfg = run.config
    if run.is_linear_probe:
        data = run.data_root or cfg.get("data_root_abs") or cfg.get("data_root")
        return (f"python tools/linear_probe.py --data {data} --arch {cfg.get('arch')} --size {cfg.get('size')} "
                f"(it fits every fold)")
    argv, kept, skip = list(cfg.get("argv") or []), [], False
    for a in argv:
        if skip:
            skip = False
        elif a in _NOT_KEPT:
            skip = a != "--resume"
        elif a.split("=", 1)[0] not in _NOT_KEPT:
            kept.append(a)
    if not argv:
        kept = ["--arch", str(cfg.get("arch")), "..."]  # recorded before argv was: its flags are in config.json
    flags = " ".join(map(shlex.quote, kept))
    return " ; ".join(f"python train.py {flags} --fold {f}".replace("  ", " ") for f in folds)


def left_out_lines(lo, k, user="stacking", unreadable=0):
    """Lines saying why a model is left out of the library and what makes it complete; user: who needs
    the folds (stacking, the explorer); unreadable: how many run folders could not be read."""
    lines = [f"{lo['name']} seed {lo['seed']}: usable runs for fold(s) "
             f"{[f for f in range(k) if f not in lo['missing_folds']] or 'none'} of 0..{k - 1}"]
    by_fix = {}
    for u in lo["unusable"]:
        by_fix.setdefault((u["fix"], u["reason"]), []).append(u)
    for (fix, _), us in by_fix.items():
        names = ", ".join(f"{u['run']} (fold {u['fold']})" for u in us)
        lines.append(f"  {names}: {us[0]['reason'].replace('(it has', '(has' if len(us) > 1 else '(it has')}; "
                     f"make {'them' if len(us) > 1 else 'it'} with: {fix.replace('{runs}', ' '.join(u['dir'] for u in us))}")
    if lo["no_run_folds"]:
        lines.append(f"  fold(s) {lo['no_run_folds']} have no " + (f"readable run ({unreadable} run folder(s) could not "
                     f"be read, listed below: repair them or " if unreadable else f"run: {user} needs out-of-fold "
                     f"predictions of every fold; ") + "train them (scripts/cv.sh trains and predicts every fold of a "
                     "configuration; tools/linear_probe.py fits every fold of a linear probe)" + (")" if unreadable else ""))
    return lines


def left_out_warnings(left_out, k, runs, user="stacking", unreadable=0):
    """The warnings (str) about ``left_out`` (the library's left-out dicts); runs: the Run objects read.
    Models whose runs are all usable but cover some folds only share one line; the others keep theirs."""
    by_name = {r.name: r for r in runs}
    gaps = [lo for lo in left_out if not lo["unusable"] and lo["runs"] and not unreadable]
    out = ["left out " + "\n".join(left_out_lines(lo, k, user, unreadable)) for lo in left_out if lo not in gaps]
    if gaps:
        first = gaps[0]
        models = ", ".join(f"{lo['name']} seed {lo['seed']} (fold(s) {sorted(set(range(k)) - set(lo['missing_folds']))})"
                           for lo in gaps)
        out.append(f"left out {len(gaps)} model(s) with runs of some folds only ({user} needs out-of-fold predictions "
                   f"of every fold 0..{k - 1} of a model): {models}; to stack one, train its missing folds with its "
                   f"flags, e.g. for {first['name']}: {fold_command(by_name[first['runs'][0]], first['missing_folds'])}")
    return out
