"""tools/report.py: the self-contained HTML report over synthetic runs and a real stack.py report,
checked by parsing the HTML and in headless Chromium."""
import base64
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import fbeta_score

from conftest import ROOT
from helpers import FAST_METHODS, LIBRARY_LABELS, run_stack, write_runs
import utils.analysis.plots as plots
from utils.analysis.report import ModelView, draw_model, stack_section
from utils.analysis.scores import OOF, score_oof

MODELS = [dict(arch="net0", signal=1.0, seeds=[0, 1]), dict(arch="net1", signal=1.6),
          dict(arch="net2", signal=1.3, labels=["a", "c"])]


def load_report_tool():
    spec = importlib.util.spec_from_file_location("tool_report", ROOT / "tools" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Page(HTMLParser):
    """ids, local links, image sources and tables (id -> rows of (text, data-key)) of a page."""

    def __init__(self, text):
        super().__init__()
        self.ids, self.hrefs, self.imgs, self.tables, self.attrs = [], [], [], {}, {}
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs.setdefault(tag, []).append(a)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [tag, "", a.get("data-key")]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and self._row[0][0] == "th":
                self._table["head"] = [c[1] for c in self._row]
            else:
                self._table["rows"].append([(c[1], c[2]) for c in self._row])
            self._row = None
        elif tag == "table":
            self._table = None

    def column(self, table, name):
        t = self.tables[table]
        j = t["head"].index(name)
        return [r[j] for r in t["rows"]]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Runs of three models (one with two seeds, one with a label group), training histories,
    a stack report made by stack.py, and the HTML report over them."""
    root, y, folds, probs = write_runs(tmp_path_factory.mktemp("rep"), MODELS, n=120, n_test=10)
    for i, run in enumerate(sorted((root / "runs").iterdir())):
        pd.DataFrame({"stage": [1, 1, 2], "epoch": [1, 2, 3], "lr": [1e-2, 1e-2, 1e-3],
                      "train_loss": [0.7, 0.5, 0.4 - i / 100], "val_loss": [0.6, 0.5, 0.45],
                      "val_f2": [0.5, 0.6, 0.62], **{f"f2_{lab}": [0.4, 0.5, 0.6] for lab in LIBRARY_LABELS}}
                     ).to_csv(run / "history.csv", index=False)
    r = run_stack("--runs", root / "runs" / "*", "--method", *FAST_METHODS, "--out", root / "sub" / "sub.csv")
    assert r.returncode == 0, r.stderr
    out = root / "report.html"
    tool = load_report_tool()
    tool.main(tool.get_args_parser().parse_args(["--runs", str(root / "runs"), "--out", str(out)]))
    return root, y, probs, out


@pytest.mark.slow
def test_report_is_self_contained_and_linked(report):
    *_, out = report
    text = out.read_text()
    page = Page(text)
    assert "<link" not in text and "http://" not in text and "https://" not in text
    assert len(page.imgs) >= 3 * 2 + 7 + 2  # per model bars + distributions, a history per run, 2 heatmaps
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG" and min(img.size) > 50
    assert len(page.ids) == len(set(page.ids))
    local = [h[1:] for h in page.hrefs if h.startswith("#")]
    assert local and set(local) <= set(page.ids), set(local) - set(page.ids)
    for section in ("leaderboard", "models", "correlation", "stacks", "thresholds"):
        assert section in page.ids and f"#{section}" in page.hrefs


def test_report_numbers_match_references(report):
    root, y, probs, out = report
    page = Page(out.read_text())
    # leaderboard: f2 at 0.2 of each model's out-of-fold predictions (seeds averaged), against sklearn
    names = page.column("models-table", "name")
    f2_fixed = dict(zip((n for n, _ in names), (float(k) for _, k in page.column("models-table", "f2@0.2"))))
    for m in MODELS:
        cols = [LIBRARY_LABELS.index(t) for t in m.get("labels", LIBRARY_LABELS)]
        p = np.mean([probs[(m["arch"], s)][0] for s in m.get("seeds", [0])], axis=0)
        want = fbeta_score(y[:, cols], p >= 0.2, beta=2, average="samples", zero_division=1.0)
        got = [v for n, v in f2_fixed.items() if n.startswith(m["arch"] + "-")]
        assert got == [pytest.approx(want, abs=1e-9)]
    # per-label F2 in tables of their own, so that the leaderboard needs no scrolling
    assert not [c for t in ("models-table", "runs-table") for c in page.tables[t]["head"] if c.startswith("f2:")]
    assert page.tables["models-labels"]["head"] == ["name"] + [f"f2:{lab}" for lab in LIBRARY_LABELS]
    assert page.tables["runs-labels"]["head"] == ["run"] + [f"f2:{lab}" for lab in LIBRARY_LABELS]
    for hidden in ("images", "paths", "converted"):  # the same for every run here: nothing to read
        assert hidden not in page.tables["runs-table"]["head"]
    assert len(page.tables["runs-table"]["rows"]) == len(page.tables["runs-labels"]["rows"]) == 3 * 2 + 3 + 3
    # a run's model reads as in the models table, and links to it
    models = {t for t, _ in page.column("models-table", "name")}
    assert {t for t, _ in page.column("runs-table", "model")} == models
    # the stack report: every method's cross-fitted F2 and spread, the chosen thresholds
    rep = json.loads((root / "runs" / "stack_report.json").read_text())
    methods = {t.replace(" (chosen)", ""): (float(f), float(s)) for (t, _), (_, f), (_, s) in
               zip(page.column("stack0-methods", "method"), page.column("stack0-methods", "cross-fitted F2"),
                   page.column("stack0-methods", "± std (folds)"))}
    for spec, m in rep["methods"].items():
        assert methods[spec] == pytest.approx((m["f2_cross_fitted"], m["std"]), abs=1e-12)
    assert any(t.endswith("(chosen)") and t.startswith(rep["chosen"]) for t, _ in
               page.column("stack0-methods", "method"))
    stack_thr = page.column("thresholds-table", [c for c in page.tables["thresholds-table"]["head"] if c.startswith("stack")][0])
    labels = [t for t, _ in page.column("thresholds-table", "label")]
    assert labels == list(LIBRARY_LABELS)
    assert dict(zip(labels, (float(k) for _, k in stack_thr))) == pytest.approx(rep["thresholds"], abs=1e-12)


@pytest.fixture
def drawn(monkeypatch):
    """The figures utils.analysis.plots saves, kept to look inside (list of Figure)."""
    figures, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig) or save(fig, path, dpi))
    return figures


def weak_model(labels=("a", "b", "c", "d", "e"), n=150, seed=3):
    """A ModelView of noisy out-of-fold predictions: the greedy thresholds, chosen for the
    image-averaged F2, leave some labels well below their own best F2. Label 'e' has no positives."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(labels))) < [0.5, 0.15, 0.08, 0.6, 0.0]).astype(np.uint8)
    probs = np.clip(0.3 + 0.25 * y + rng.normal(0, 0.2, y.shape), 0.001, 0.999)
    oof = OOF([f"im{i}" for i in range(n)], list(labels), probs, y, "none")
    return ModelView("m", "weak", [], oof, score_oof(oof))


def bar_notes(fig):
    """{label: the text written beside its bar} of a plot_label_f2 figure, and the bar lengths."""
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    notes = [t.get_text() for t in ax.texts]
    widths = [p.get_width() for p in ax.patches]
    return dict(zip(labels, notes)), dict(zip(labels, widths))


def test_label_bars_show_the_f2_at_the_threshold_they_show(drawn):
    view = weak_model()
    draw_model(view)
    notes, widths = bar_notes(drawn[0])
    y, probs = view.oof.y, view.oof.probs
    below_best = 0
    for j, lab in enumerate(view.oof.labels[:4]):
        t = view.scores["thresholds"][j]
        at_t = fbeta_score(y[:, j], probs[:, j] >= t, beta=2, zero_division=1.0)  # brute force, sklearn
        best = max(fbeta_score(y[:, j], probs[:, j] >= c, beta=2, zero_division=1.0)
                   for c in [*np.unique(probs[:, j]), 1.5])
        assert widths[lab] == pytest.approx(at_t, abs=1e-12)
        assert notes[lab].startswith(f"{at_t:.3f}  t={t:.2f}"), notes[lab]
        if best > at_t + 5e-4:
            below_best += 1
            assert notes[lab].endswith(f"(best {best:.3f})")
    assert below_best >= 1  # the case the bars used to get wrong: best F2 written next to another threshold


def test_label_without_positives_has_no_bar_but_a_note(drawn):
    view = weak_model()
    draw_model(view)
    notes, widths = bar_notes(drawn[0])
    assert notes["e"].startswith(plots.NO_POSITIVES) and widths["e"] == 0
    assert not any(n.startswith(plots.NO_POSITIVES) for lab, n in notes.items() if lab != "e")


def test_labels_without_positives_read_na_with_a_footnote(tmp_path, drawn):
    """Tag d on no image, tag c on none of fold 0's: their F2 cells read n/a* (sorting last)
    with the note under the table, in the models', the runs' and the bars' per-label F2."""
    root, _, folds, _ = write_runs(tmp_path, MODELS[1:2], n=90, n_test=5)
    train = pd.read_csv(root / "data" / "train.csv", keep_default_na=False)
    train["tags"] = [" ".join(t for t in tags.split() if t != "d" and not (t == "c" and f == 0))
                     for tags, f in zip(train["tags"], folds)]
    train.to_csv(root / "data" / "train.csv", index=False)
    for run in (root / "runs").iterdir():
        pd.DataFrame({"epoch": [1, 2], "val_f2": [0.5, 0.6], **{f"f2_{lab}": [1.0, 1.0] for lab in LIBRARY_LABELS}}
                     ).to_csv(run / "history.csv", index=False)
    out = tmp_path / "r.html"
    tool = load_report_tool()
    tool.main(tool.get_args_parser().parse_args(["--runs", str(root / "runs"), "--out", str(out)]))
    text = out.read_text()
    page = Page(text)
    assert [c for c, _ in page.column("models-labels", "f2:d")] == ["n/a*"]
    assert page.column("models-labels", "f2:c")[0][1] is not None  # c has positives in the other folds
    runs = [r for r, _ in page.column("runs-labels", "run")]
    for run, (c_text, c_key), (d_text, d_key) in zip(runs, page.column("runs-labels", "f2:c"),
                                                    page.column("runs-labels", "f2:d")):
        assert (d_text, d_key) == ("n/a*", None)
        assert (c_text == "n/a*") == run.endswith("-f0") and (c_key is None) == run.endswith("-f0")
    note = "* n/a: no image here has the tag"
    for table in ("models-labels", "runs-labels"):
        start = text.index(f'id="{table}"')
        assert text.index("</table>", start) < text.index(note, start) < text.index("<table", start)
    bars = next(fig for fig in drawn if fig.axes[0].get_xlabel() == "F2 of the label over the images")
    notes, _ = bar_notes(bars)
    assert notes["d"].startswith(plots.NO_POSITIVES) and not notes["c"].startswith(plots.NO_POSITIVES)
    histories = [fig for fig in drawn if len(fig.axes) == 3 and fig.axes[2].get_legend()]
    legends = [[t.get_text() for t in fig.axes[2].get_legend().get_texts()] for fig in histories]
    assert len(legends) == 3
    assert sum(f"c ({plots.NO_POSITIVES})" in lg for lg in legends) == 1  # fold 0's run only
    assert all(f"d ({plots.NO_POSITIVES})" in lg for lg in legends)


def test_stack_labels_without_positives_read_na(tmp_path):
    rep = {"methods": {"mean": {"f2_cross_fitted": 0.5, "per_label": {"a": 0.4, "z": 1.0}}},
           "library": {"labels": ["a", "z"], "label_frequency": {"a": 0.3, "z": 0.0}},
           "members": [{"name": "m", "label_f2": {"a": 0.4, "z": 1.0}}]}
    path = tmp_path / "stack_report.json"
    path.write_text(json.dumps(rep))
    s = stack_section(path, {}, {}, 0)
    assert [[c.text for c in row] for row in s["per_label"].rows] == [["a", "0.3000", "0.4000"],
                                                                     ["z", "0.0000", "n/a*"]]
    assert s["per_label"].footnote.startswith("* n/a: no image here has the tag")
    assert s["members"].rows[0][4].key == pytest.approx(0.4)  # the mean leaves out z's 0/0 F2
    assert "not z" in s["members"].footnote


def chromium():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def browse(url, tmp_path, *flags):
    """Headless Chromium on `url`; returns (stdout, stderr with console messages)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *flags, url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_report_in_headless_chromium(report, tmp_path):
    *_, out = report
    shot = tmp_path / "shot.png"
    _, log = browse(out.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console  # the page logs nothing: no script error, no warning
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280) and pixels.std() > 10  # not blank
    # the sorting script ran: ?sort=runs-table:f2:a orders the runs table by label a's F2, high first
    dom, log = browse(out.as_uri() + "?sort=runs-labels:f2:a", tmp_path, "--dump-dom")
    assert not [line for line in log.splitlines() if ":CONSOLE" in line]
    page = Page(dom)
    assert page.attrs["body"][0].get("data-ready") == "1"
    keys = [float(k) for _, k in page.column("runs-labels", "f2:a")]
    assert len(keys) == 12 and keys == sorted(keys, reverse=True) and keys != sorted(keys)
    before = [float(k) for _, k in Page(out.read_text()).column("runs-labels", "f2:a")]
    assert sorted(before) == sorted(keys) and before != keys


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_report_fits_the_window_and_figures_open_full_size(report, tmp_path):
    """In a 1400 px window the leaderboard needs no horizontal scrolling, figures are shown
    at least at their own size up to the page width, and a click shows a figure full size."""
    *_, out = report
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", """<script>
window.addEventListener("load", function () {
  var t = document.getElementById("models-table").parentNode, r = document.getElementById("runs-table").parentNode;
  var img = document.querySelector(".runs img"), zoom = document.getElementById("zoom");
  var shown = img.getBoundingClientRect().width;
  img.click();
  document.body.setAttribute("data-probe", [t.scrollWidth <= t.clientWidth, r.scrollWidth <= r.clientWidth,
    shown >= Math.min(img.naturalWidth, document.body.clientWidth) - 2,
    getComputedStyle(zoom).display, zoom.querySelector("img").src === img.src].join(","));
});
</script></body>"""))
    dom, _ = browse(probe.as_uri(), tmp_path, "--window-size=1400,1000", "--dump-dom")
    assert Page(dom).attrs["body"][0].get("data-probe") == "true,true,true,block,true"


def test_no_finished_runs_exit_2(tmp_path):
    root, *_ = write_runs(tmp_path, MODELS[1:2], n=60, n_test=5)
    for done in (root / "runs").glob("*/result.json"):
        done.unlink()
    out = tmp_path / "r.html"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), "--runs", str(root / "runs"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "no finished runs" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [(["--threshold", "7"], "--threshold 7.0: must be in [0, 1]"),
                                            (["--stack-report", "BAD"], "not a readable stack report")])
@pytest.mark.slow
def test_bad_threshold_or_given_stack_report_exit_2(tmp_path, flags, message):
    root, *_ = write_runs(tmp_path, MODELS[1:2], n=60, n_test=5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"methods": 1}')
    out = tmp_path / "r.html"
    flags = [str(bad) if f == "BAD" else f for f in flags]
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), "--runs", str(root / "runs"),
                        "--out", str(out), *flags], capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_stack_report_found_and_given_counts_once(report, tmp_path):
    root, *_ = report
    given = sorted(root.rglob("stack_report*.json"))
    assert len(given) == 1
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), "--runs", "runs", "--out",
                        str(tmp_path / "r.html"), "--stack-report", str(given[0].relative_to(root))],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and "1 stack report(s)" in r.stdout, r.stderr
