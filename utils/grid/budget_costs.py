"""The budget planner's cost model: each job's predicted seconds, a one-time part plus rates x sizes.

Every job pays a one-time part (`fixed`): the start-up of its interpreters, and the decoding
of image caches no earlier job of the plan has made and that are not on disk yet. The rest
is the work, each term a rate measured on this machine and this dataset times the size of
the work (utils/grid/budget_probe.py measures the networks' images/s, utils/grid/budget_rates.py
the rest):

    train    epochs x (fold's training images / train images/s + its validation images / predict images/s)
    predict  (training images + K x test images) x TTA views / predict images/s
    probe    (training + test images) x views / predict images/s  +  K x (fit s per fold + s/(image x label) x fold images x L)
    stack    members x L x (s per member and label + s/image x training images), per set of methods
    report   one start-up + figures per member

Pure functions: no file is read, nothing is timed. Corrections per kind of job (actual /
predicted seconds of the finished ones) act on the work, never on the one-time part
(utils.grid.budget.corrections).
"""
from dataclasses import dataclass

from utils.predict.tta_views import TTA_VIEWS

REPORT_MEMBER_S = 2.0    # tools/report.py: figures of one member (a few small PNGs), beyond the start-up
INTERIM_METHODS = ("best", "mean")   # the stack after each member: the cheap methods, a submission at every step


@dataclass(frozen=True)
class Cost:
    """Predicted seconds of one job: fixed (start-up and cache decoding, paid once whatever the
    speed of the work) and work (what scales with the measured rates)."""
    fixed: float
    work: float

    @property
    def total(self):
        return self.fixed + self.work


def views(tta, default=10):
    """Views a TTA name averages (utils.predict.tta's table)."""
    return TTA_VIEWS.get(tta, default)


def decode_seconds(facts, measured, need, decoded):
    """Seconds decoding the caches in `need` ({'train@64', 'test@64', ...}) that are neither on disk
    (measured.cached) nor made by an earlier job of the plan (`decoded`, which is updated)."""
    seconds = 0.0
    for key in sorted(set(need) - set(decoded) - set(measured.cached)):
        split, size = key.split("@")
        n = facts.n_train if split == "train" else facts.n_test
        rate = measured.decode_ips.get(str(size))
        seconds += n / rate if rate else 0.0
    decoded.update(need)
    return seconds


def train_cost(m, speed, facts, measured, decoded):
    """One fold of a trained member."""
    n_val = facts.n_train / facts.folds_k
    work = m.epochs * ((facts.n_train - n_val) / speed.train_ips + n_val / speed.predict_ips)
    return Cost(measured.job_start_s + decode_seconds(facts, measured, {f"train@{m.size}"}, decoded), work)


def predict_cost(m, speed, facts, measured, tta, decoded):
    """predict.py over a member's runs: every run's validation fold and the test set, x TTA views."""
    images = facts.n_train + facts.folds_k * facts.n_test
    need = {f"train@{m.size}", f"test@{m.size}"}
    return Cost(measured.job_start_s + decode_seconds(facts, measured, need, decoded),
                images * views(tta) / speed.predict_ips)


def probe_cost(m, speed, facts, measured, decoded):
    """A linear probe: features of the train and test images (x views), then the logistic
    regressions of every fold on its training rows."""
    extract = (facts.n_train + facts.n_test) * views(m.tta, 2) / speed.predict_ips
    fold_rows = facts.n_train * (facts.folds_k - 1) / facts.folds_k
    per_fold, per_row_label = measured.fit_s.get(m.arch, (0.0, 0.0))
    fit = facts.folds_k * (per_fold + per_row_label * fold_rows * facts.n_labels)
    need = {f"train@{m.size}", f"test@{m.size}"}
    return Cost(measured.job_start_s + decode_seconds(facts, measured, need, decoded), extract + fit)


def stack_cost(n_members, which, facts, measured):
    """stack.py with the final methods (which='final') or INTERIM_METHODS ('interim'): members x
    labels x (a cost per member and label + a rate x training images), as measured."""
    per_label, per_image = measured.stack_s.get(which, (0.0, 0.0))
    work = max(1, n_members) * facts.n_labels * (per_label + per_image * facts.n_train)
    return Cost(measured.job_start_s, work)


def report_cost(n_members, measured):
    """The report, in this process: its imports (about one start-up) and figures per member."""
    return Cost(measured.start_s, REPORT_MEMBER_S * max(1, n_members))
