"""The repository's plan stays visible: utils/ holds concept packages only, modules stay small,
the Trainer stays readable, one parser reads option values, tests mirror the packages,
ARCHITECTURE.md names every package and module, and the packages stand in the layers it writes
(a package imports only from those below it; nothing in utils/, tools/, bench/ or scripts/ imports
a top-level script or a tool)."""
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


SCRIPTS = sorted(p.stem for p in ROOT.glob("*.py"))  # train, predict, stack
LAYERS_LINE = re.compile(r"^[ \t]*(\w+(?:[ \t]*<[ \t]*\w+)+)[ \t]*$", re.M)


def layers():
    """The packages bottom to top, as ARCHITECTURE.md's "Layers" section writes them (the one place)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "ARCHITECTURE.md lacks its '## Layers' section"
    line = LAYERS_LINE.search(section.group(1))
    assert line, "ARCHITECTURE.md's Layers section lacks the line 'common < data < ...'"
    return [name.strip() for name in line.group(1).split("<")]


def imported_modules(path):
    """(line, dotted module) of every import in the file, inside functions too; a relative import
    is resolved against the file's package, `from utils import x` counts as utils.x."""
    here = path.relative_to(ROOT).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module in ("utils", "tools") or not node.module:
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}" if module else alias.name
            else:
                yield node.lineno, module


def test_the_layers_name_every_package_once():
    order = layers()
    assert len(order) == len(set(order)), f"ARCHITECTURE.md's layers name a package twice: {order}"
    assert sorted(order) == [pkg.name for pkg in PACKAGES], \
        f"ARCHITECTURE.md's layers {order} are not the packages of utils/ {[pkg.name for pkg in PACKAGES]}"


def test_a_package_imports_only_from_the_packages_below_it():
    rank = {name: i for i, name in enumerate(layers())}
    wrong = []
    for path in MODULES:
        own = path.relative_to(UTILS).parts[0]
        if own not in rank:
            continue
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] != "utils" or len(parts) < 2 or parts[1] not in rank or parts[1] == own:
                continue
            if rank[parts[1]] > rank[own]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {parts[1]} ({module}), "
                             f"which is above it")
    assert wrong == [], ("imports against the layers of ARCHITECTURE.md (" + " < ".join(layers()) + "):\n"
                         + "\n".join(wrong))


def test_no_library_tool_or_bench_module_imports_a_script_or_a_tool():
    files = [*MODULES, *(ROOT / "tools").glob("*.py"), *(ROOT / "bench").glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    wrong = []
    for path in files:
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in SCRIPTS or top == "tools":
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert len(SCRIPTS) >= 3
    assert wrong == [], "scripts and tools meet through files on disk, not imports:\n" + "\n".join(wrong)


def test_no_test_module_imports_another():
    """Test modules share helpers through tests/conftest.py and tests/helpers.py, never by importing
    each other (imports inside functions count too)."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom):  # from . import test_x
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if any(part.startswith("test_") for part in name.split(".")):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert wrong == [], ("test modules import other test modules; move what they share to tests/helpers.py "
                         "(fixtures: tests/conftest.py):\n" + "\n".join(wrong))
