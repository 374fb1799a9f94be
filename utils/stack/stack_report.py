"""The stacking report: every method's scores, weights and the choice as JSON
(stack_report.json), and the same as Markdown (stack_report.md)."""
import numpy as np

from utils.stack.layers import describe_combiner
from utils.stack.methods import LEVEL2


def build_report(lib, results, members, chosen, chosen_by, settings):
    """The JSON-ready report: library, baselines, every method's scores and weights, the choice.

    lib: Library; results: {spec: Scored}; members: ``member_scores`` rows; chosen:
    the spec used for the submission and chosen_by: why; settings: dict of the options
    used (threshold, tta, groups, ...), stored as is.
    """
    full = [m for m in members if "f2_cross_fitted" in m]
    best_single = max(full, key=lambda m: m["f2_cross_fitted"]) if full else None
    methods = {}
    for spec, r in results.items():
        methods[spec] = {
            "f2_cross_fitted": r.mean, "std": r.std, "f2_per_fold": r.f2_per_fold, "f2_pooled": r.f2_pooled,
            "f2_in_sample": r.f2_in_sample, "optimism": r.f2_in_sample - r.mean,
            "per_label": {lab: float(f) for lab, f in zip(lib.labels, r.per_label)},
            "seconds": r.seconds,
            "weights": describe_combiner(r.model, [m.name for m in lib.members], lib.labels),
        }
    return {
        "settings": settings,
        "library": {"images": len(lib.names), "labels": list(lib.labels), "folds": int(np.unique(lib.folds).size),
                    "label_frequency": {lab: float(f) for lab, f in zip(lib.labels, lib.y.mean(0))},
                    "members": len(lib.members), "configurations": len({m.model for m in lib.members}),
                    "test_images": len(lib.test_names), "left_out": lib.left_out, "notes": lib.notes},
        "best_single": None if best_single is None else {k: best_single[k] for k in
                                                          ("name", "f2_cross_fitted", "std", "f2_in_sample")},
        "methods": methods,
        "ranking": sorted(results, key=lambda s: -results[s].mean),
        "chosen": chosen,
        "chosen_by": chosen_by,
        "thresholds": None if results[chosen].thresholds is None else
        {lab: float(t) for lab, t in zip(lib.labels, results[chosen].thresholds)},
        "members": members,
    }


def _thresholds_words(settings):
    """'thresholds `greedy`', or where --thresholds gave the submission's thresholds, that file's."""
    if settings.get("thresholds_file"):
        return (f"the submission's thresholds from `{settings['thresholds_file']}` (stack.py --thresholds; the "
                f"cross-fitted scores fit `{settings.get('threshold')}`)")
    return f"thresholds `{settings.get('threshold')}`"


def _f(x, digits=4):
    return "" if x is None else f"{round(x, digits) + 0.0:.{digits}f}"     # + 0.0: no "-0.0000"


def render_report(rep, max_methods=10):
    """Markdown text of a report made by ``build_report``."""
    lib, s = rep["library"], rep["settings"]
    lines = ["# Stacking report", ""]
    if s.get("command"):
        lines += [f"Command: `{s['command']}`", ""]
    lines += [f"Library: {lib['members']} members ({lib['configurations']} configurations), "
              f"{lib['images']} training images, {len(lib['labels'])} labels, {lib['folds']} folds, "
              f"{lib['test_images']} test images. TTA `{s.get('tta')}`, {_thresholds_words(s)}, "
              f"F{s.get('beta', 2):g} averaged over images."]
    if s.get("groups"):
        lines.append(f"Layers: groups by `{s['groups']}`, then `{s.get('top') or 'the same method'}` across groups.")
    for lo in lib["left_out"]:
        lines.append(f"- left out {lo.get('name', lo['model'])} seed {lo['seed']}: missing fold(s) {lo['missing_folds']}"
                     f"{' (' + '; '.join(lo['reasons']) + ')' if lo['reasons'] else ''}")
    lines += [f"- {n}" for n in lib["notes"]]
    lines += ["", "## Methods", "",
              "Cross-fitted: the combiner and its thresholds are fitted on the other folds' out-of-fold "
              "predictions and scored on the held-out fold (mean and spread over folds). In-sample: fitted "
              "and scored on the same rows, shown for contrast only.", "",
              "| method | cross-fitted F2 | ± std | in-sample F2 | optimism | seconds |",
              "|---|---|---|---|---|---|"]
    bs = rep["best_single"]
    rows = [(spec, m) for spec, m in rep["methods"].items()]
    if bs:
        rows.append((f"best single model ({bs['name']})",
                     {"f2_cross_fitted": bs["f2_cross_fitted"], "std": bs["std"], "f2_in_sample": bs["f2_in_sample"],
                      "optimism": bs["f2_in_sample"] - bs["f2_cross_fitted"], "seconds": None}))
    for spec, m in sorted(rows, key=lambda t: -t[1]["f2_cross_fitted"]):
        tag = " **(chosen)**" if spec == rep["chosen"] else (" (label frequencies)" if spec == "prior" else "")
        lines.append(f"| {spec}{tag} | {_f(m['f2_cross_fitted'])} | {_f(m['std'])} | {_f(m['f2_in_sample'])} | "
                     f"{_f(m['optimism'], 4)} | {_f(m['seconds'], 1)} |")
    lines += ["", f"Submission method: `{rep['chosen']}` ({rep['chosen_by']}), refitted on all out-of-fold data."]
    if rep["thresholds"]:
        what = "Target shares (prevalence)" if s.get("threshold") == "prevalence" else "Thresholds"
        lines.append(f"{what}: " + ", ".join(f"{k} {v:.4g}" for k, v in rep["thresholds"].items()))
    shown = [s for s in rep["ranking"] if s != "prior"][:max_methods] + ["prior"]
    lines += ["", "## Per-label F2 of the held-out decisions", "",
              "| label | frequency | " + " | ".join(shown) + " |", "|---" * (len(shown) + 2) + "|"]
    for lab in lib["labels"]:
        lines.append(f"| {lab} | {lib['label_frequency'][lab]:.3f} | " +
                     " | ".join(_f(rep["methods"][s]["per_label"][lab], 3) for s in shown) + " |")
    lines += _weights_section(rep)
    lines += ["", "## Members", "", "Each member alone. Mean label F2: each label's F2 at its best threshold "
              "(in-sample), averaged over the member's labels. Cross-fitted F2 (thresholds fitted on the other "
              "folds) for the members with every label that rank highest by mean label F2.", "",
              "| member | group | runs | cross-fitted F2 | in-sample F2 | mean label F2 |", "|---|---|---|---|---|---|"]

    def mean_label_f2(m):
        lf = list(m["label_f2"].values())
        return float(np.mean(lf)) if lf else None

    for m in sorted(rep["members"], key=lambda m: (-(m.get("f2_cross_fitted") or -1), -(mean_label_f2(m) or 0))):
        lf = list(m["label_f2"].values())
        lines.append(f"| {m['name']} | {m['group'] or ''} | {len(m['runs'])} | {_f(m.get('f2_cross_fitted'))} | "
                     f"{_f(m.get('f2_in_sample'))} | {_f(float(np.mean(lf)) if lf else None)} |")
    return "\n".join(lines) + "\n"


def _weights_section(rep):
    """Markdown lines listing the chosen members and weights per label of the weighting methods."""
    lines = []
    for spec, m in rep["methods"].items():
        w = m["weights"]
        if not w or spec in ("prior", "mean") or list(w) != rep["library"]["labels"]:
            continue
        what = "coefficient" if spec.partition(":")[0] in LEVEL2 else "weight"
        lines += ["", f"### {spec} (fitted on all out-of-fold data)", "", f"| label | members ({what}) |",
                  "|---|---|"]
        for lab, ws in w.items():
            lines.append(f"| {lab} | " + ", ".join(f"{k} ({v:g})" for k, v in ws.items()) + " |")
    if lines:
        lines = ["", "## Chosen members per label"] + lines
    return lines
