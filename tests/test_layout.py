"""The repository's plan stays visible: utils/ holds concept packages only, modules stay small,
the Trainer stays readable, one parser reads option values, tests mirror the packages, and
ARCHITECTURE.md names every package and module."""
import ast
import re

from conftest import ROOT

UTILS = ROOT / "utils"
PACKAGES = sorted(p for p in UTILS.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
MODULES = sorted(p for p in UTILS.rglob("*.py") if "__pycache__" not in p.parts)
MAX_MODULE_LINES = 500
MAX_TRAINER_LINES = 200


def test_utils_holds_only_packages_each_with_a_docstring():
    loose = [p.name for p in UTILS.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert len(PACKAGES) >= 8
    for pkg in PACKAGES:
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"{pkg.name}/__init__.py needs a docstring naming what it holds"


def test_every_module_has_a_docstring_and_at_most_500_lines():
    for path in MODULES:
        text = path.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(ROOT)} has no docstring"
        assert text.count("\n") <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines"


def _class_lines(path, name):
    tree = ast.parse(path.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return cls.end_lineno - cls.lineno + 1


def test_the_trainer_class_is_at_most_200_lines():
    assert _class_lines(UTILS / "train" / "trainer.py", "Trainer") <= MAX_TRAINER_LINES


def test_one_function_turns_option_text_into_values():
    """Every `name:key=value` list goes through utils/common/options.py: no other module parses
    booleans or numbers out of option strings on its own."""
    defs = []
    for path in [*MODULES, *ROOT.glob("*.py"), *(ROOT / "tools").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and re.fullmatch(r"_?parse_value|_as_bool|_to_bool", node.name):
                defs.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert defs == ["utils/common/options.py:parse_value"]


def test_architecture_names_every_package_and_module_and_walks_through_a_flag():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for heading in ("Adding a flag", "Where does X live", "Dataset layout", "Run directory", "File formats",
                    "Flag names", "Portable paths"):
        assert re.search(rf"^#+ .*{heading}", text, re.M), f"ARCHITECTURE.md lacks a section '{heading}'"
    for path in MODULES:
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(ROOT).as_posix()
        assert rel in text or f"{path.parent.name}/{path.name}" in text or path.name in text, \
            f"ARCHITECTURE.md does not name {rel}"
    for pkg in PACKAGES:
        assert f"utils/{pkg.name}" in text or f"**{pkg.name}**" in text, \
            f"ARCHITECTURE.md does not name utils/{pkg.name}"


def test_tests_mirror_the_packages():
    tests = ROOT / "tests"
    loose = sorted(p.name for p in tests.glob("test_*.py") if p.name != "test_layout.py")
    assert loose == [], "test modules belong in tests/<package>/ or tests/scripts/"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and list(p.glob("test_*.py"))}
    assert folders <= {pkg.name for pkg in PACKAGES} | {"scripts"}
    for folder in folders - {"scripts"}:
        modules = {p.stem for p in (UTILS / folder).glob("*.py")}
        for test in (tests / folder).glob("test_*.py"):
            stem = test.stem[len("test_"):]
            assert any(stem == m or stem.startswith(m + "_") for m in modules), \
                f"{test.relative_to(ROOT)} names no module of utils/{folder}"


def test_no_code_cites_a_file_users_do_not_have():
    for path in [*MODULES, *ROOT.glob("*.py"), *(ROOT / "tools").glob("*.py"), *(ROOT / "scripts").glob("*")]:
        if path.is_file():
            assert "DESIGN.md" not in path.read_text(errors="replace"), path.relative_to(ROOT)
