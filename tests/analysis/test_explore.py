"""tools/explore.py and utils/analysis/explore*.py: the error explorer's data against references computed
here from the prediction files, and the page itself in headless Chromium (selenium): no script error,
no network, its F2 and galleries against numpy, nothing overlapping, the files it downloads read back
by the project's own readers."""
import base64
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT
from utils.analysis.explore import Explorer, Model, read_flagged
from utils.analysis.explore_page import QUANT, build_page, disagreement_rows, page_f2, quantise
from utils.common.errors import DataError
from utils.data.exclusion import read_exclusion
from utils.metrics.fbeta import fbeta_samples
from utils.metrics.threshold_file import read_thresholds_file
from utils.runs.pred_files import read_preds, write_preds

LABELS = ["sky", "tree", "road", "water", "car"]
N, K_FOLDS, GALLERY = 150, 3, 12
SIGNAL = {"m0": 1.0, "m1": 2.0}

spec_ = importlib.util.spec_from_file_location("explore_tool", ROOT / "tools" / "explore.py")
tool = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(tool)


def grid_probs(rng, y, signal):
    """(N, L) probabilities on the page's uint16 grid (k / QUANT, distinct within a label), ordered as
    noisy scores of y: quantising them changes nothing, so the references below are exact."""
    z = rng.normal(0, 1, y.shape) + signal * (2.0 * y - 1)
    p = np.empty(y.shape)
    for j in range(y.shape[1]):
        ks = np.sort(rng.choice(QUANT + 1, len(y), replace=False))
        p[np.argsort(z[:, j]), j] = ks / QUANT
    return p


def write_images(folder, names, rng, size=20):
    folder.mkdir(parents=True)
    for n in names:
        img = np.zeros((size, size, 3), np.uint8)
        img[:] = rng.integers(0, 255, 3)
        img[: size // 3] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"{n}.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A dataset, two models of three folds each (preds/val.none.csv on the probability grid), a stack
    folder and a label_issues.csv flagging two images. Returns a dict of paths and arrays."""
    tmp = tmp_path_factory.mktemp("explore")
    rng = np.random.default_rng(0)
    y = (rng.random((N, len(LABELS))) < [0.5, 0.3, 0.2, 0.1, 0.4]).astype(np.uint8)
    y[7] = 0  # an image with no tag: F2 convention
    names = [f"im{i:03d}" for i in range(N)]
    data = tmp / "data"
    write_images(data / "train", names, rng)
    pd.DataFrame({"image_name": names, "tags": [" ".join(t for t, v in zip(LABELS, r) if v) for r in y]}
                 ).to_csv(data / "train.csv", index=False)
    folds = rng.permutation(N) % K_FOLDS
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(data / "folds.csv", index=False)
    probs = {}
    for arch, signal in SIGNAL.items():
        probs[arch] = p = grid_probs(rng, y, signal)
        for f in range(K_FOLDS):
            d = tmp / "runs" / f"{arch}-f{f}"
            (d / "preds").mkdir(parents=True)
            cfg = {"name": d.name, "arch": arch, "fold": f, "seed": 0, "labels": LABELS, "all_labels": LABELS,
                   "label_group": None, "images": "train", "data_root": os.path.relpath(data, d),
                   "data_root_abs": str(data), "folds_file": "folds.csv", "folds_k": K_FOLDS}
            (d / "config.json").write_text(json.dumps(cfg))
            (d / "result.json").write_text(json.dumps({"finished": True}))
            rows = np.flatnonzero(folds == f)[::-1]
            write_preds(d / "preds" / "val.none.csv", [names[i] for i in rows], LABELS, p[rows])
    stack = tmp / "stack"
    stack.mkdir()
    probs["stack"] = grid_probs(rng, y, 2.5)
    write_preds(stack / "stack_oof.csv", names, LABELS, probs["stack"])
    stack_thr = {"sky": 0.4, "tree": 0.35, "road": 0.5, "water": 0.3, "car": 0.45}
    (stack / "stack_report.json").write_text(json.dumps({"chosen": "mean", "thresholds": stack_thr}))
    # flag the most confident false positive of 'sky' (model m0) and a true negative
    neg = np.flatnonzero(y[:, 0] == 0)
    first_fp = names[neg[np.argmax(probs["m0"][neg, 0])]]
    issues = pd.DataFrame({"rank": [1, 2, 3], "image_name": [first_fp, names[3], names[4]], "tag": ["sky", "road", "car"],
                           "issue": [True, True, False]})
    issues.to_csv(tmp / "label_issues.csv", index=False)
    return {"tmp": tmp, "data": data, "runs": tmp / "runs", "stack": stack, "names": names, "y": y, "probs": probs,
            "folds": folds, "stack_thr": stack_thr, "issues": tmp / "label_issues.csv", "first_fp": first_fp}


@pytest.fixture(scope="module")
def page(runs):
    """The page over both models, the stack and the label issues, made by the tool."""
    out = runs["tmp"] / "explore.html"
    tool.main(tool.get_args_parser().parse_args(
        ["--runs", str(runs["runs"] / "*"), "--stack", str(runs["stack"]), "--label-issues", str(runs["issues"]),
         "--gallery", str(GALLERY), "--out", str(out)]))
    return out


def embedded(html):
    text = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(text)


def decoded(data):
    """(y (N, L), {model name: q (N, L) uint16}) from the page's JSON."""
    n, labels = len(data["names"]), data["labels"]
    bits = np.frombuffer(base64.b64decode(data["truth"]), np.uint8).reshape(len(labels), -1)
    y = np.unpackbits(bits, axis=1)[:, :n].T
    q = {m["name"]: np.frombuffer(base64.b64decode(m["probs"]), "<u2").reshape(len(labels), n).T for m in data["models"]}
    return y, q


# ----------------------------------------------------------------------------- data, without a browser

def test_quantised_f2_matches_the_file_within_1e_3():
    rng = np.random.default_rng(1)
    y = (rng.random((4000, 17)) < 0.2).astype(np.uint8)
    p = np.round(1 / (1 + np.exp(-(rng.normal(0, 1.5, y.shape) + 2 * y - 1))), 7)  # as predict.py writes them
    for t in (np.full(17, 0.2), rng.uniform(0.05, 0.9, 17)):
        assert page_f2(y, quantise(p), t) == pytest.approx(fbeta_samples(y, p >= t), abs=1e-3)


def test_the_page_embeds_the_files_and_the_thresholds(runs, page):
    data = embedded(page.read_text())
    assert data["labels"] == LABELS and data["names"] == runs["names"]
    y, q = decoded(data)
    np.testing.assert_array_equal(y, runs["y"])
    names = [m["name"] for m in data["models"]]
    assert len(names) == 3 and names[2] == "stack (mean)" and names[0].startswith("m0") and names[1].startswith("m1")
    for name, key in zip(names, ("m0", "m1", "stack")):
        np.testing.assert_array_equal(q[name], np.rint(runs["probs"][key] * QUANT))  # exact: grid values
    assert data["models"][2]["thresholds"] == [runs["stack_thr"][t] for t in LABELS]
    # the models start at the greedy thresholds of their out-of-fold file, as predict.py fits them
    from utils.metrics.thresholds import fit_thresholds
    ref = fit_thresholds(runs["y"], runs["probs"]["m1"], "greedy", folds=runs["folds"])
    np.testing.assert_allclose(data["models"][1]["thresholds"], np.clip(ref, 0, 1), rtol=1e-6)
    assert data["flagged"] == {str(runs["names"].index(runs["first_fp"])): "sky", "3": "road"}


def test_thumbnails_cover_every_gallery_at_the_start(runs, page):
    """Every image a false-positive or false-negative gallery shows at the starting thresholds, and the
    most disagreeing images of each pair, have a thumbnail (a JPEG data: URI of the asked size)."""
    data = embedded(page.read_text())
    y, q = decoded(data)
    want = set()
    for m in data["models"]:
        p = q[m["name"]] / QUANT
        for j, t in enumerate(m["thresholds"]):
            neg, pos = np.flatnonzero(y[:, j] == 0), np.flatnonzero(y[:, j] == 1)
            fp = neg[np.argsort(-p[neg, j], kind="stable")][:GALLERY]
            fn = pos[np.argsort(p[pos, j], kind="stable")][:GALLERY]
            want |= set(fp[p[fp, j] >= t].tolist()) | set(fn[p[fn, j] < t].tolist())
    qs = list(q.values())
    for a in range(3):
        for b in range(a + 1, 3):
            want |= set(disagreement_rows(qs[a], qs[b], GALLERY).tolist())
    have = {int(i) for i in data["thumbs"]}
    assert want <= have and len(have) < N
    img = Image.open(io.BytesIO(base64.b64decode(data["thumbs"][str(min(have))].split(",", 1)[1])))
    assert img.format == "JPEG" and img.size == (80, 80)


class Refs(HTMLParser):
    """Every src and href of a page, and its tags."""

    def __init__(self, text):
        super().__init__()
        self.refs, self.tags = [], set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href")]


def test_the_file_refers_to_nothing_outside_it(page):
    text = page.read_text()
    refs = Refs(text)
    assert "link" not in refs.tags and all(r.startswith(("data:", "#")) for r in refs.refs)
    assert not re.search(r"https?://", text) and "@import" not in text


def test_the_tool_prints_the_f2_the_page_starts_at(runs, tmp_path, capsys):
    out = tmp_path / "e.html"
    tool.main(tool.get_args_parser().parse_args(["--runs", str(runs["runs"] / "m1-*"), "--out", str(out),
                                                 "--gallery", "5"]))
    data = embedded(out.read_text())
    t = np.array(data["models"][0]["thresholds"])
    ref = fbeta_samples(runs["y"], runs["probs"]["m1"] >= t)
    assert f"F2 at the starting thresholds: {data['models'][0]['name']} {ref:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--stack", "STACK"], "--stack without --runs needs --data"),
    (["--stack", "NOWHERE", "--data", "DATA"], "--stack NOWHERE: no such folder"),
    (["--runs", "RUNS/*", "--out", "DATA/train/x.html"], "is inside the dataset's image folder"),
    (["--runs", "RUNS/*", "--out", "DATA/train.csv"], "is the dataset's own train.csv"),
    (["--runs", "RUNS/*", "--label-issues", "STACK/stack_report.json"], "--label-issues"),
    (["--runs", "RUNS/*", "--gallery", "0"], "--gallery 0"),
    (["--runs", "NOWHERE"], "--runs: not found: NOWHERE"),
])
def test_bad_input_is_a_data_error_naming_the_flag(runs, tmp_path, flags, message):
    where = {"STACK": str(runs["stack"]), "DATA": str(runs["data"]), "RUNS": str(runs["runs"]),
             "NOWHERE": str(tmp_path / "nowhere")}
    argv = [re.sub("STACK|DATA|RUNS|NOWHERE", lambda m: where[m.group(0)], a) for a in flags]
    message = re.sub("NOWHERE", str(tmp_path / "nowhere"), message)
    with pytest.raises(DataError, match=re.escape(message)):
        tool.main(tool.get_args_parser().parse_args(argv + ["--out", str(tmp_path / "e.html")]
                                                    if "--out" not in argv else argv))
    assert not (tmp_path / "e.html").exists()


def test_every_flag_states_its_default():
    parser = tool.get_args_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in action.help, action.option_strings


def test_label_issues_names_must_be_training_images(runs, tmp_path):
    bad = tmp_path / "li.csv"
    pd.DataFrame({"image_name": ["im001", "elsewhere.jpg"], "issue": [True, True]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"--label-issues .*li.csv: 1 image\(s\) are not training images.*elsewhere"):
        read_flagged(bad, runs["names"])
    pd.DataFrame({"image_name": ["im001.png", "im002"]}).to_csv(bad, index=False)  # an --exclude list: all flagged
    assert read_flagged(bad, runs["names"]) == {1: [], 2: []}


@pytest.mark.slow
def test_a_bad_flag_exits_2_without_a_traceback(runs, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "explore.py"), "--stack", str(runs["stack"]),
                        "--out", str(tmp_path / "e.html")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--data" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_the_report_links_to_an_explorer_beside_it(runs, tmp_path):
    """tools/report.py links explore.html when the file lies next to the report, and only then."""
    spec = importlib.util.spec_from_file_location("report_tool", ROOT / "tools" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    folder = tmp_path / "out"
    folder.mkdir()
    for with_explorer in (False, True):
        if with_explorer:
            (folder / "explore.html").write_text("<html></html>")
        out = folder / "report.html"
        report.main(report.get_args_parser().parse_args(["--runs", str(runs["runs"]), "--out", str(out)]))
        assert ('href="explore.html"' in out.read_text()) == with_explorer


# ----------------------------------------------------------------------------- in headless Chromium

def chromium_paths():
    """(chromium, chromedriver) paths, or None when either (or selenium) is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)
    return (browser, driver) if browser and driver else None


needs_chromium = pytest.mark.skipif(chromium_paths() is None, reason="needs selenium, chromium and chromedriver "
                                    "(Debian: apt-get install chromium chromium-driver; pip install selenium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
              f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def open_page(driver, path, size=(1280, 900)):
    driver.set_window_size(*size)
    driver.get(Path(path).as_uri())
    assert driver.execute_script("return document.body.getAttribute('data-ready')") == "1"
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []  # no script error, no console error or warning


def move(driver, label, value):
    driver.execute_script("var i = document.querySelector('input[data-label=\"' + arguments[0] + '\"]');"
                          "i.value = arguments[1]; i.dispatchEvent(new Event('input', {bubbles: true}));", label, value)


def controls(driver):
    return np.array(driver.execute_script(
        "return Array.from(document.querySelectorAll('input[type=range][data-label]'), i => [i.getAttribute("
        "'data-label'), parseFloat(i.value)])"), dtype=object)


def shown_f2(driver):
    el = driver.find_element("css selector", '[data-role="f2"]')
    assert abs(float(el.text) - float(el.get_attribute("data-value"))) <= 5e-5
    return float(el.get_attribute("data-value"))


def gallery(driver, role):
    return [int(r) for r in driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-role=\"' + arguments[0] + '\"] .card'), "
        "c => c.getAttribute('data-row'))", role)]


def select_model(driver, role, index):
    driver.execute_script("var s = document.querySelector('[data-role=\"' + arguments[0] + '\"]'); s.value = "
                          "String(arguments[1]); s.dispatchEvent(new Event('change', {bubbles: true}));", role, index)


@pytest.mark.slow
@needs_chromium
def test_f2_and_galleries_follow_the_thresholds(browser, runs, page):
    open_page(browser, page)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.execute_script("return Array.from(document.querySelectorAll('[src],[href]'), e => "
                                  "e.getAttribute('src') || e.getAttribute('href')).filter(v => !/^(data:|#)/.test(v))") == []
    y, names = runs["y"], runs["names"]
    for index, key in ((0, "m0"), (2, "stack")):
        select_model(browser, "model", index)
        files = read_preds(runs["stack"] / "stack_oof.csv") if key == "stack" else None
        for moves in ([], [("sky", 0.61), ("road", 0.05)], [("car", 1.0), ("tree", 0.0)]):
            for label, value in moves:
                move(browser, label, value)
            labels, thr = controls(browser).T
            assert list(labels) == LABELS
            p = files[2] if files else runs["probs"][key]
            assert shown_f2(browser) == pytest.approx(fbeta_samples(y, p >= thr.astype(float)), abs=1e-3)
        # the galleries of the last label moved: most confident mistakes first
        j, t = LABELS.index("tree"), thr[LABELS.index("tree")]
        neg, pos = np.flatnonzero((y[:, j] == 0) & (p[:, j] >= t)), np.flatnonzero((y[:, j] == 1) & (p[:, j] < t))
        assert gallery(browser, "fp") == neg[np.argsort(-p[neg, j])][:GALLERY].tolist()
        assert gallery(browser, "fn") == pos[np.argsort(p[pos, j])][:GALLERY].tolist() == []  # t = 0: none missed
    move(browser, "tree", 0.9)
    j = LABELS.index("tree")
    pos = np.flatnonzero((y[:, j] == 1) & (runs["probs"]["stack"][:, j] < 0.9))
    assert gallery(browser, "fn") == pos[np.argsort(runs["probs"]["stack"][pos, j])][:GALLERY].tolist() != []
    cards = browser.execute_script("return Array.from(document.querySelectorAll('[data-role=fn] .card'), c => c.innerText)")
    i = pos[np.argsort(runs["probs"]["stack"][pos, j])][0]
    assert names[i] in cards[0] and "tree" in cards[0].split("predicted")[0]


@pytest.mark.slow
@needs_chromium
def test_matrix_compare_and_flags_match_references(browser, runs, page):
    open_page(browser, page)
    y, p = runs["y"], runs["probs"]["m0"]
    thr = controls(browser)[:, 1].astype(float)
    pred = p >= thr
    missed = (y == 1) & ~pred
    counts = np.array([[int(np.sum(missed[:, a] & pred[:, b] & (y[:, b] == 0))) if a != b else 0
                        for b in range(len(LABELS))] for a in range(len(LABELS))])
    cells = browser.execute_script("return Array.from(document.querySelectorAll('table.matrix td.hit'), "
                                   "td => [+td.dataset.a, +td.dataset.b, +td.textContent])")
    assert {(a, b): n for a, b, n in cells} == {(a, b): n for (a, b), n in np.ndenumerate(counts) if n}
    a, b = np.unravel_index(np.argmax(counts), counts.shape)
    browser.find_element("css selector", f'table.matrix td[data-a="{a}"][data-b="{b}"]').click()
    rows = np.flatnonzero(missed[:, a] & pred[:, b] & (y[:, b] == 0))
    assert gallery(browser, "cell") == rows[np.argsort(-p[rows, b])][:GALLERY].tolist()
    # side by side: the most disagreeing images of m0 and the stack
    score = np.abs(runs["probs"]["m0"] - runs["probs"]["stack"]).sum(1)
    assert gallery(browser, "compare") == np.lexsort((np.arange(N), -np.round(score * QUANT)))[:GALLERY].tolist()
    select_model(browser, "compare-b", 1)
    score = np.abs(runs["probs"]["m0"] - runs["probs"]["m1"]).sum(1)
    assert gallery(browser, "compare") == np.lexsort((np.arange(N), -np.round(score * QUANT)))[:GALLERY].tolist()
    # label_issues.py's flagged images carry the mark wherever they are shown, the others not
    flagged = {runs["names"].index(runs["first_fp"]), 3}
    marks = browser.execute_script("return Array.from(document.querySelectorAll('.card'), c => "
                                   "[+c.dataset.row, !!c.querySelector('.flag')])")
    assert any(r in flagged for r, _ in marks) and all(f == (r in flagged) for r, f in marks)


@pytest.mark.slow
@needs_chromium
def test_downloads_read_back_with_the_projects_readers(browser, runs, page, tmp_path):
    """Marked images download as an --exclude list train.py reads and a relabel list; the thresholds as
    the file predict.py / stack.py --thresholds read."""
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    open_page(browser, page)
    move(browser, "water", 0.123)
    boxes = browser.find_elements("css selector", '[data-role="fp"] .card input[data-role="mark"]')[:2]
    rows = [int(b.find_element("xpath", "./ancestor::div[@class='card']").get_attribute("data-row")) for b in boxes]
    for b in boxes:
        b.click()
    assert browser.find_element("css selector", '[data-role="marked-count"]').text == "2 marked"
    assert sorted(gallery(browser, "marked")) == sorted(rows)
    for role in ("download-exclude", "download-relabel", "save-thresholds"):
        browser.find_element("css selector", f'[data-role="{role}"]').click()
    files = [tmp_path / f for f in ("exclude.csv", "relabel.csv", "thresholds.json")]
    deadline = time.time() + 20
    while not all(f.is_file() for f in files) and time.time() < deadline:
        time.sleep(0.1)
    got, _ = read_exclusion(files[0], runs["names"])
    assert got.tolist() == sorted(rows)
    relabel = pd.read_csv(files[1], dtype=str, keep_default_na=False)
    train = pd.read_csv(runs["data"] / "train.csv", dtype=str, keep_default_na=False).set_index("image_name")
    assert list(relabel.columns) == ["image_name", "given_tags", "predicted_tags"]
    assert relabel["given_tags"].tolist() == [train.loc[n, "tags"] for n in relabel["image_name"]]
    thr = read_thresholds_file(files[2], LABELS)
    np.testing.assert_array_equal(thr, controls(browser)[:, 1].astype(float))
    assert thr[LABELS.index("water")] == 0.123


OVERLAPS = """
window.scrollTo(0, 0);  // the sticky header covers what is scrolled under it, by design
function boxes(sel) { return Array.from(document.querySelectorAll(sel), e => e.getBoundingClientRect())
                            .filter(r => r.width > 0 && r.height > 0); }
function clash(a, b) { return a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5; }
function pairs(rs) { let n = 0; for (let i = 0; i < rs.length; i++) for (let j = i + 1; j < rs.length; j++) n += clash(rs[i], rs[j]); return n; }
function inside(outer, inner) { return inner.left >= outer.left - 0.5 && inner.right <= outer.right + 0.5 &&
                                       inner.top >= outer.top - 0.5 && inner.bottom <= outer.bottom + 0.5; }
const out = {sections: pairs(boxes('header, #controls, #galleries, #matrix, #compare, #marked')),
             sliders: pairs(boxes('input[type=range]')), cells: 0, cards: 0, spill: 0, n_cards: 0,
             wide: document.documentElement.scrollWidth > document.documentElement.clientWidth};
const panel = document.querySelector('#controls .panel');
out.wide = out.wide || panel.scrollWidth > panel.clientWidth;  // every label's row fits without scrolling sideways
document.querySelectorAll('table.labels tr').forEach(tr => { out.cells += pairs(Array.from(tr.children, c => c.getBoundingClientRect())); });
document.querySelectorAll('.gallery').forEach(g => { const cs = Array.from(g.querySelectorAll('.card'));
  out.n_cards += cs.length; out.cards += pairs(cs.map(c => c.getBoundingClientRect()));
  cs.forEach(c => { const r = c.getBoundingClientRect();
    c.querySelectorAll('*').forEach(e => { if (!inside(r, e.getBoundingClientRect())) out.spill++; }); }); });
for (const [outer, inner] of [['#matrix', '#matrix-wrap'], ['#controls', '#controls .panel'], ['#galleries', '#galleries .panel']])
  if (!inside(document.querySelector(outer).getBoundingClientRect(), document.querySelector(inner).getBoundingClientRect())) out.spill++;
return out;
"""


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("n_labels, size", [(2, (1280, 900)), (17, (1280, 900)), (17, (800, 900)), (100, (1280, 900))])
def test_nothing_overlaps(browser, tmp_path, n_labels, size):
    rng = np.random.default_rng(n_labels)
    n = 90
    labels = [f"label_{j:02d}" + ("_with_a_long_name" if j % 7 == 3 else "") for j in range(n_labels)]
    y = (rng.random((n, n_labels)) < 0.3).astype(np.uint8)
    names = [f"image_{i:03d}" for i in range(n)]
    write_images(tmp_path / "imgs", names[:3], rng)
    files = [tmp_path / "imgs" / f"{names[i % 3]}.png" for i in range(n)]
    models = []
    for m in range(2):
        p = 1 / (1 + np.exp(-(rng.normal(0, 1, y.shape) + (m + 1) * (2.0 * y - 1))))
        models.append(Model(f"model {m}", p, np.full(n_labels, 0.3), np.ones(n_labels, bool), "test"))
    ex = Explorer(labels, names, y, None, models, files, {0: [labels[0]], 5: []})
    html, _ = build_page(ex, "layout", gallery=20)
    (tmp_path / "p.html").write_text(html)
    open_page(browser, tmp_path / "p.html", size)
    for cell in browser.find_elements("css selector", 'table.matrix td.hit')[:1]:
        cell.click()  # a cell's gallery too
    got = browser.execute_script(OVERLAPS)
    assert got["n_cards"] > 20
    assert got == {"sections": 0, "sliders": 0, "cells": 0, "cards": 0, "spill": 0, "n_cards": got["n_cards"],
                   "wide": False}


@pytest.mark.slow
@needs_chromium
def test_images_without_a_thumbnail_show_their_name_and_tags(browser, tmp_path):
    """Thumbnails cover the galleries near the starting thresholds (--margin 0 here); a threshold moved
    further shows the other images by name and tags, without a picture."""
    rng = np.random.default_rng(3)
    n, labels = 200, ["x", "y", "z"]
    y = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    names = [f"pic_{i:03d}" for i in range(n)]
    write_images(tmp_path / "imgs", names[:1], rng)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, y.shape) + 2 * (2.0 * y - 1))))
    ex = Explorer(labels, names, y, None, [Model("m", p, np.full(3, 0.9), np.ones(3, bool), "test")],
                  [tmp_path / "imgs" / "pic_000.png"] * n)
    html, _ = build_page(ex, "far", gallery=30, margin=0.0)
    thumbs = {int(i) for i in embedded(html)["thumbs"]}
    (tmp_path / "p.html").write_text(html)
    open_page(browser, tmp_path / "p.html")
    move(browser, "x", 0.0)
    cards = browser.execute_script("return Array.from(document.querySelectorAll('[data-role=fp] .card'), c => "
                                   "[+c.dataset.row, !!c.querySelector('img'), !!c.querySelector('.noimg'), c.innerText])")
    assert len(cards) == 30 and any(not has_img for _, has_img, _, _ in cards)
    for row, has_img, no_img, text in cards:
        assert has_img == (row in thumbs) != no_img
        given = " ".join(t for t, v in zip(labels, y[row]) if v) or "none"
        assert names[row] in text and f"given {given}" in text


# ----------------------------------------------------------------------------- inputs checked, outputs refused

def run_tool(*argv):
    return tool.main(tool.get_args_parser().parse_args([str(a) for a in argv]))


def copy_runs(runs, tmp_path):
    """A writable copy of the fixture's runs and stack folder: (runs folder, stack folder)."""
    shutil.copytree(runs["runs"], tmp_path / "runs")
    shutil.copytree(runs["stack"], tmp_path / "stack")
    return tmp_path / "runs", tmp_path / "stack"


@pytest.mark.parametrize("target", ["STACK/stack_oof.csv", "STACK/stack_report.json", "ISSUES",
                                    "RUNS/m0-f0/preds/val.none.csv", "RUNS/m0-f0/config.json", "RUNS/m0-f0/e.html"])
def test_out_is_never_a_file_it_reads_nor_in_a_run_folder(runs, target):
    path = Path(target.replace("STACK", str(runs["stack"])).replace("RUNS", str(runs["runs"]))
                .replace("ISSUES", str(runs["issues"])))
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(DataError, match=r"--out .*(a file this command reads|is inside the run folder)"):
        run_tool("--runs", runs["runs"] / "*", "--stack", runs["stack"], "--label-issues", runs["issues"],
                 "--out", path)
    assert (path.read_bytes() if path.exists() else None) == before


def test_out_that_is_a_pipe_is_refused_and_kept(runs, tmp_path):
    import stat

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match=re.escape("is a named pipe (FIFO), not a regular file")):
        run_tool("--runs", runs["runs"] / "m1-*", "--out", tmp_path / "fifo")
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


def test_an_unknown_tta_is_named(runs, tmp_path):
    with pytest.raises(DataError, match=r"unknown TTA 'bogus'; give one of auto, none, hflip.*10crop"):
        run_tool("--runs", runs["runs"] / "*", "--tta", "bogus", "--out", tmp_path / "e.html")
    assert tool.check_tta_name("10crop-avg") == "10crop-avg"


def test_label_issues_that_is_a_folder_says_so(runs, tmp_path):
    with pytest.raises(DataError, match=re.escape(f"--label-issues {tmp_path}: is a folder")):
        read_flagged(tmp_path, runs["names"])


def fingerprinted(runs, tmp_path):
    """Runs copied with the dataset's fingerprint in config.json, stack files next to them (where
    stack.py writes them by default) with stack_report.json listing the members' runs."""
    from utils.runs.fingerprint import dataset_fingerprint

    folder, _ = copy_runs(runs, tmp_path)
    stamp = dataset_fingerprint(runs["data"], folds_file=runs["data"] / "folds.csv")
    members = []
    for arch in SIGNAL:
        names = []
        for f in range(K_FOLDS):
            cfg = folder / f"{arch}-f{f}" / "config.json"
            cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "dataset": stamp}))
            names.append(f"{arch}-f{f}")
        members.append({"name": arch, "runs": names})
    shutil.copy(runs["stack"] / "stack_oof.csv", folder)
    report = {"chosen": "mean", "thresholds": runs["stack_thr"], "members": members}
    (folder / "stack_report.json").write_text(json.dumps(report))
    return folder


def other_dataset(runs, tmp_path, drop=0):
    """The dataset copied (images linked) with one tag changed, or its last `drop` rows removed."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "train").symlink_to(runs["data"] / "train")
    train = pd.read_csv(runs["data"] / "train.csv", dtype=str, keep_default_na=False)
    folds = pd.read_csv(runs["data"] / "folds.csv", dtype=str)
    if drop:
        train, folds = train.iloc[:-drop], folds.iloc[:-drop]
    else:
        train.loc[0, "tags"] = "car" if train.loc[0, "tags"] != "car" else "sky"
    train.to_csv(other / "train.csv", index=False)
    folds.to_csv(other / "folds.csv", index=False)
    return other


def test_a_stack_of_another_dataset_is_refused(runs, tmp_path):
    folder = fingerprinted(runs, tmp_path)
    out = tmp_path / "e.html"
    run_tool("--stack", folder, "--data", runs["data"], "--out", out)  # its own dataset: fine
    assert [m["name"] for m in embedded(out.read_text())["models"]] == ["stack (mean)"]
    other = other_dataset(runs, tmp_path)
    with pytest.raises(DataError, match=r"--stack .*made from runs of another dataset than .*other.*train.csv"):
        run_tool("--stack", folder, "--data", other, "--out", tmp_path / "e2.html")
    with pytest.raises(DataError, match=r"runs trained on another dataset"):  # --runs with --data: the library's check
        run_tool("--runs", folder, "--stack", folder, "--data", other, "--out", tmp_path / "e2.html")
    assert not (tmp_path / "e2.html").exists()


def test_a_stack_with_rows_the_dataset_lacks_is_refused(runs, tmp_path):
    """A train.csv with fewer rows (the same images otherwise): the stack's extra rows are named."""
    other = other_dataset(runs, tmp_path, drop=3)
    with pytest.raises(DataError, match=r"3 row\(s\) name images that are not in its train.csv: 'im147'"):
        run_tool("--stack", runs["stack"], "--data", other, "--out", tmp_path / "e.html")


def test_a_stack_with_other_labels_names_those_that_differ(runs, tmp_path):
    _, stack = copy_runs(runs, tmp_path)
    names, labels, p = read_preds(stack / "stack_oof.csv")
    write_preds(stack / "stack_oof.csv", names, [t if t != "water" else "lake" for t in labels], p)
    with pytest.raises(DataError, match=r"\('lake' only in the stack; 'water' only in the dataset\)"):
        run_tool("--stack", stack, "--data", runs["data"], "--out", tmp_path / "e.html")


@pytest.mark.parametrize("value, message", [(7, r"not a number in \[0, 1\]: car=7"), ("x", r"not a number in \[0, 1\]: car='x'")])
def test_stack_thresholds_out_of_range_are_refused(runs, tmp_path, value, message):
    _, stack = copy_runs(runs, tmp_path)
    (stack / "stack_report.json").write_text(json.dumps({"chosen": "mean", "thresholds": {**runs["stack_thr"],
                                                                                          "car": value}}))
    with pytest.raises(DataError, match=r"--stack .*stack_report.json: " + message):
        run_tool("--stack", stack, "--data", runs["data"], "--out", tmp_path / "e.html")


def test_thresholds_applied_from_a_file_are_named_so(runs, tmp_path):
    _, stack = copy_runs(runs, tmp_path)
    report = {"chosen": "mean", "thresholds": runs["stack_thr"], "settings": {"thresholds_file": "mine.json"}}
    (stack / "stack_report.json").write_text(json.dumps(report))
    run_tool("--stack", stack, "--data", runs["data"], "--out", tmp_path / "e.html")
    model = embedded((tmp_path / "e.html").read_text())["models"][0]
    assert model["source"] == "the thresholds of mine.json (applied by stack.py --thresholds)"


def test_the_title_names_the_stack_folder_with_stack_alone(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_tool("--stack", runs["stack"], "--data", runs["data"], "--out", "e.html")
    assert "<title>Errors: stack</title>" in (tmp_path / "e.html").read_text()


@pytest.mark.parametrize("damage", ["broken", "missing"])
def test_a_run_with_an_unreadable_config_is_named(runs, tmp_path, damage):
    folder, _ = copy_runs(runs, tmp_path)
    cfg = folder / "m1-f0" / "config.json"
    cfg.write_text('{"arch": "m1", ') if damage == "broken" else cfg.unlink()
    with pytest.raises(DataError) as err:
        run_tool("--runs", folder / "m1-*", "--out", tmp_path / "e.html")
    text = str(err.value)
    assert str(cfg) in text and "have no readable run" in text and "have no run:" not in text
    assert text.startswith("no model to show: the explorer needs preds/val.none.csv from a run of every fold")


def test_missing_folds_say_what_the_explorer_needs(runs, tmp_path):
    folder, _ = copy_runs(runs, tmp_path)
    shutil.rmtree(folder / "m1-f2")
    with pytest.raises(DataError) as err:
        run_tool("--runs", folder / "m1-*", "--out", tmp_path / "e.html")
    text = str(err.value)
    assert text.startswith("no model to show: the explorer needs") and "stacking" not in text
    assert "fold(s) [2] have no run: the explorer needs out-of-fold predictions of every fold" in text
    assert "scripts/cv.sh" in text and "tools/linear_probe.py" in text


def test_a_val_file_with_only_a_header_says_so(runs, tmp_path):
    folder, _ = copy_runs(runs, tmp_path)
    path = folder / "m1-f1" / "preds" / "val.none.csv"
    path.write_text("image_name," + ",".join(LABELS) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: has no rows (only a header)")):
        run_tool("--runs", folder / "m1-*", "--out", tmp_path / "e.html")


def test_a_failed_write_is_on_a_line_of_its_own(runs, tmp_path, monkeypatch, capsys):
    from utils.common.cli import exit_cleanly
    from utils.common.write_errors import write_fault

    def full(path, text):
        raise write_fault(OSError(28, "No space left on device"), path)

    monkeypatch.setattr(tool, "atomic_write_text", full)
    with pytest.raises(SystemExit) as code:
        exit_cleanly(lambda: run_tool("--runs", runs["runs"] / "m1-*", "--out", tmp_path / "e.html", "--gallery", "3"))
    err = capsys.readouterr().err
    assert code.value.code == 1
    assert any(line.startswith("error: ") and "e.html" in line for line in err.split("\n")), repr(err[-400:])


# ----------------------------------------------------------------------------- quantisation keeps the start

def tiny_threshold_case(seed=5, n=400):
    """A label on 92% of the images whose probabilities lie between 1e-30 and 1e-5 and whose threshold
    is 6.7e-27, a label whose probabilities crowd just under 1 with a threshold there, and an ordinary
    one. Returns (y, p, thresholds)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 3), np.uint8)
    y[:, 0] = rng.random(n) < 0.92
    y[:, 1] = rng.random(n) < 0.5
    y[:, 2] = rng.random(n) < 0.3
    p = np.empty((n, 3))
    p[:, 0] = 10.0 ** rng.uniform(-30, -5, n)
    p[:, 1] = 1 - 10.0 ** rng.uniform(-12, -5, n)
    p[:, 2] = rng.random(n)
    return y, p, np.array([6.7e-27, 1 - 3e-9, 0.37])


def test_the_starting_decisions_survive_quantisation():
    from utils.analysis.explore_page import page_thresholds

    y, p, t = tiny_threshold_case()
    ref = fbeta_samples(y, p >= t)
    q = quantise(p, t)
    assert page_f2(y, q, page_thresholds(t)) == pytest.approx(ref, abs=1e-9)
    assert np.array_equal(q / QUANT >= page_thresholds(t), p >= t)
    for j in range(3):  # the order within a label is kept
        o = np.argsort(p[:, j], kind="stable")
        assert np.all(np.diff(q[o, j].astype(int)) >= 0)
    # a threshold above 1 (the greedy search's "never" when a probability is 1.0) predicts nothing
    q = quantise(np.ones((4, 1)), [1.0 + 1e-12])
    assert not (q / QUANT >= page_thresholds([1.0 + 1e-12])).any()


def test_the_tool_prints_the_files_f2_for_tiny_thresholds(tmp_path):
    y, p, t = tiny_threshold_case()
    ex = Explorer(["a", "b", "c"], [f"x{i}" for i in range(len(y))], y, None,
                  [Model("tiny", p, t, np.ones(3, bool), "test")], [None] * len(y))
    html, summary = build_page(ex, "tiny", gallery=5)
    assert summary["f2"]["tiny"] == pytest.approx(fbeta_samples(y, p >= t), abs=1e-9)
    (tmp_path / "tiny.html").write_text(html)


@pytest.mark.slow
@needs_chromium
def test_the_page_starts_at_the_files_f2_for_tiny_thresholds(browser, tmp_path):
    y, p, t = tiny_threshold_case()
    ex = Explorer(["a", "b", "c"], [f"x{i}" for i in range(len(y))], y, None,
                  [Model("tiny", p, t, np.ones(3, bool), "test")], [None] * len(y))
    html, _ = build_page(ex, "tiny", gallery=5)
    (tmp_path / "p.html").write_text(html)
    open_page(browser, tmp_path / "p.html")
    assert shown_f2(browser) == pytest.approx(fbeta_samples(y, p >= t), abs=1e-9)


@pytest.mark.slow
@needs_chromium
def test_side_by_side_marks_what_a_and_b_missed_and_names_one_model_twice(browser, runs, page):
    open_page(browser, page)
    select_model(browser, "compare-a", 0)
    select_model(browser, "compare-b", 2)
    select_model(browser, "model", 1)  # the model at the top is neither A nor B
    select_model(browser, "compare-b", 2)
    got = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-role=compare] .card'), c => [+c.dataset.row, "
        "Array.from(c.querySelectorAll('[data-model]'), d => [+d.dataset.model, Array.from(d.querySelectorAll('.miss'), "
        "s => s.textContent)])])")
    assert got
    thr = {0: np.array(embedded(page.read_text())["models"][0]["thresholds"]),
           2: np.array([runs["stack_thr"][t] for t in LABELS])}
    probs = {0: runs["probs"]["m0"], 2: runs["probs"]["stack"]}
    for row, lines in got:
        for mi, missed in lines:
            want = [LABELS[j] for j in range(len(LABELS)) if runs["y"][row, j] and probs[mi][row, j] < thr[mi][j]]
            assert missed == want
    select_model(browser, "compare-b", 0)
    text = browser.find_element("css selector", '[data-role="compare"]').text
    assert "A and B are the same model" in text
