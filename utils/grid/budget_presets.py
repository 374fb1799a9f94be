"""The presets of tools/submit.py --budget (fast, balanced, best) and the members they offer.

Each preset says what a plan favours, and every choice cites the EXPERIMENTS.md section
behind it (`evidence`, printed with the plan). `candidates` turns a preset, the
architectures available here and the command line's overrides into the ordered list of
members the planner (utils/grid/budget.py) takes from: linear probes first (cheap, and at a
CPU budget the best single model measured), then trained models, seed by seed, cheapest
architecture and size first.
"""
import re
from dataclasses import dataclass, field, replace

PROBE_TTAS = ("none", "hflip")   # the views tools/linear_probe.py can average
CROP_FLIP = "hflip;crop:0.125"   # the AlexNet/ResNet scheme, whose own test is --tta 10crop


@dataclass(frozen=True)
class Preset:
    """What a plan favours. archs: candidates, cheapest first (those with weights here are
    used); sizes (px) and epochs: the options, smallest first (trained members start at the
    smallest size and fewest epochs, the plan grows them while the budget allows); seeds; folds_k when no folds file exists;
    max_trained: trained members at most; probes: linear probes as members; tta: predict.py's
    TTA of every member (stack.py reads one); train_flags: train.py flags of every trained
    member; stack_methods: stack.py --method; evidence: choice -> the EXPERIMENTS.md section."""
    name: str
    archs: tuple
    sizes: tuple
    epochs: tuple
    seeds: tuple
    folds_k: int
    max_trained: int
    probes: bool
    tta: str
    train_flags: tuple = ()
    stack_methods: tuple = ("best", "mean", "ridge-corr")
    evidence: dict = field(default_factory=dict)


_REAL = "EXPERIMENTS.md 'Real photos'"
PRESETS = {
    "fast": Preset(
        "fast", archs=("tf_efficientnet_lite0",), sizes=(64, 128), epochs=(3, 5), seeds=(0,), folds_k=3,
        max_trained=1, probes=True, tta="hflip", stack_methods=("best", "mean", "ridge-corr"),
        evidence={
            "one small model": "EXPERIMENTS.md section b: sizes 32-64 px and their schedules were level; "
                               "section a: batch 16, 32, 64 level",
            "64 px first, 128 when it fits": "EXPERIMENTS.md section b: sizes 32-64 px were level, so a small "
                                             "budget trains small before it drops a model",
            "a linear probe": f"{_REAL}: frozen Lite0 features + logistic regression was the best single model "
                              "at a CPU budget",
            "3 folds": "EXPERIMENTS.md 'Open questions': two folds were not enough, judge on three or more",
            "tta hflip": f"{_REAL}: hflip was within the folds' spread but cheap, and the probe makes it too",
            "ridge-corr, best, mean": f"EXPERIMENTS.md 'Demo data' and {_REAL}: ridge-corr stacked best"}),
    "balanced": Preset(
        "balanced", archs=("tf_efficientnet_lite0", "tf_efficientnet_lite1"), sizes=(64, 96, 128), epochs=(4, 8),
        seeds=(0,), folds_k=5, max_trained=2, probes=True, tta="hflip",
        stack_methods=("best", "mean", "select", "lr", "ridge-corr"),
        evidence={
            "probe + Lite0 + Lite1": f"{_REAL}: the three stacked gained +0.006 over the best one",
            "5 folds": "EXPERIMENTS.md 'Open questions': judge on every fold of the split, five on real data",
            "64-128 px": "EXPERIMENTS.md section b: sizes 32-64 px were level; the plan grows to 128 px, the "
                         "probe's size, when the budget allows",
            "tta hflip": f"{_REAL}: the zoo's TTA; stack.py reads one TTA and the probe makes hflip",
            "select, lr, ridge-corr": f"EXPERIMENTS.md 'Demo data' and {_REAL}: each cross-fitted above the "
                                      "best single model"}),
    "best": Preset(
        "best", archs=("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"),
        sizes=(128, 160, 224), epochs=(8, 16), seeds=(0, 1), folds_k=5, max_trained=6, probes=False, tta="10crop",
        train_flags=("--aug", CROP_FLIP),
        stack_methods=("best", "mean", "select", "beam", "lr", "ridge-corr", "xgb"),
        evidence={
            "crop + flip with 10 crops": "EXPERIMENTS.md sections d and s: the best row, +0.014 over the default "
                                         "without TTA, held on 5 of 6 folds x seeds",
            "two seeds per model": "EXPERIMENTS.md section s: the seed moves a fold's F2 as much as most settings",
            "three architectures": f"{_REAL}: stacking different models gained the most",
            "no probes": "stack.py reads one TTA and a probe makes none or hflip, not 10crop",
            "5 folds": "EXPERIMENTS.md 'Open questions': judge on every fold of the split, five on real data"}),
}


@dataclass(frozen=True)
class Member:
    """A model the stack can use. kind: 'probe' (tools/linear_probe.py over every fold, run
    prefix `prefix`) or 'train' (train.py per fold with `flags`, then predict.py). size: px;
    epochs: trained members only; sizes: the sizes a trained member may grow to (its size
    first); bs: the batch the speed is measured at; tta: the probe's."""
    id: str
    kind: str
    arch: str
    size: int
    epochs: int = 0
    seed: int = 0
    flags: tuple = ()
    bs: int = 32
    prefix: str = ""
    tta: str = "none"
    sizes: tuple = ()

    def scaled(self, size, epochs):
        """This trained member at `size` px and `epochs` epochs (its id names the size)."""
        return replace(self, id=train_member_id(self.arch, size, self.seed), size=size, epochs=epochs)


def member_from_json(d):
    """A Member from its plan.json dict (lists back to tuples)."""
    return Member(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def plan_preset(plan):
    """The preset a plan.json dict was made with, with its TTA and stack methods as recorded."""
    return replace(PRESETS[plan["preset"]], tta=plan["tta"], stack_methods=tuple(plan["stack_methods"]))


def evidence_for(preset, folds_k, sizes=None):
    """preset.evidence, its folds entry saying `folds_k` when the dataset's folds file (or
    --folds-k) fixed another number of folds than the preset's, and its image-size entries
    (keys naming px) left out when `sizes` (--sizes) replace the preset's: one entry says so."""
    evidence = dict(preset.evidence)
    if folds_k != preset.folds_k:
        key = f"{preset.folds_k} folds"
        evidence = {(f"{folds_k} folds" if k == key else k): ("the dataset's folds.csv (or --folds-k) fixes the "
                                                              "number of folds" if k == key else v)
                    for k, v in evidence.items()}
    if sizes and tuple(sorted(sizes)) != tuple(sorted(preset.sizes)):
        evidence = {k: v for k, v in evidence.items() if not re.search(r"\d px\b", k)}
        evidence[f"{', '.join(map(str, sorted(sizes)))} px"] = "--sizes (the command line's, not the preset's)"
    return evidence


def train_member_id(arch, size, seed):
    """Id of a trained member: 'arch-SIZEpx-sSEED'."""
    return f"{arch.replace(':', '_')}-{size}px-s{seed}"


def more_seeds(seeds, n_configs, max_trained):
    """seeds, then further seeds (lower priority) until n_configs x seeds reaches max_trained:
    with fewer architectures and sizes than members, more seeds of them (EXPERIMENTS.md
    section s: the seed moves a fold's F2 as much as most settings)."""
    seeds = list(seeds)
    while n_configs * len(seeds) < max_trained:
        seeds.append(max(seeds) + 1)
    return seeds


def candidates(preset, archs, sizes, seeds, train_flags, probe_archs, bs=32):
    """Ordered members for the planner. archs: {arch: its own train.py flags} usable here;
    probe_archs: architectures with ImageNet weights here (a probe of random features is
    useless); sizes: the preset's or the command line's, the options of every trained member
    (each starts at the smallest; a probe uses the largest); seeds: the preset's or the command
    line's; train_flags: every trained member's flags (the preset's, then the command line's
    after `--`). The first probe network's probe comes first (its smaller size as a fallback), the
    other probe networks' last, at the largest size only."""
    out = []
    if preset.probes and preset.tta in PROBE_TTAS:
        for arch in probe_archs[:1]:   # the largest size; the smallest is its fallback when a budget is short
            for size in dict.fromkeys((max(sizes), min(sizes))):
                prefix = f"{arch.replace(':', '_')}-probe{size}-{preset.tta}"
                out.append(Member(f"probe-{arch}-{size}", "probe", arch, size, bs=bs, prefix=prefix, tta=preset.tta))
    sizes = tuple(sorted(set(sizes)))
    for seed in seeds:
        for arch, own in archs.items():
            flags = (*own, *preset.train_flags, *train_flags)
            out.append(Member(train_member_id(arch, sizes[0], seed), "train", arch, sizes[0],
                              min(preset.epochs), seed, flags, bs, sizes=sizes))
    if preset.probes and preset.tta in PROBE_TTAS:
        # probes of the other networks come last: a minute or two each where a trained model takes
        # many, and the probe was the best single model on real photos, so they fill what is left
        for arch in probe_archs[1:]:
            size = max(sizes)
            prefix = f"{arch.replace(':', '_')}-probe{size}-{preset.tta}"
            out.append(Member(f"probe-{arch}-{size}", "probe", arch, size, bs=bs, prefix=prefix, tta=preset.tta))
    return out
