"""The book: every chapter present, built without warnings, showing (not pasting)
code."""

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

import a3c_core
from a3c_core.show import show, source
from tests.conftest import ROOT

BOOK = ROOT / "book"
CHAPTERS = re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())
MODULES = [
    importlib.import_module(f"a3c_core.{m.name}")
    for m in pkgutil.iter_modules(a3c_core.__path__)
    if m.name != "__main__"
]


def chapter_path(name: str) -> Path:
    matches = [p for p in BOOK.glob(name + ".*") if p.suffix in (".ipynb", ".md")]
    assert matches, f"{name} is in _toc.yml but not in book/"
    return matches[0]


def notebooks():
    return [p for p in map(chapter_path, CHAPTERS) if p.suffix == ".ipynb"]


def package_lines() -> set[str]:
    lines = set()
    for module in MODULES:
        for line in source(module).splitlines():
            line = line.strip()
            if len(line) >= 20 and not line.startswith(
                ("#", '"""', "return", "from ", "import ")
            ):
                lines.add(line)
    return lines


def public_names_of(module) -> set[str]:
    """The public names a module defines (not those it imports)."""
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and getattr(obj, "__module__", None) == module.__name__
    }


def public_names() -> set[str]:
    return set().union(*map(public_names_of, MODULES))


def test_every_chapter_exists_and_starts_with_its_title():
    assert len(CHAPTERS) >= 8
    for path in notebooks():
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# "), (
            path.name
        )


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_chapters_show_package_code_instead_of_pasting_it(path):
    names, lines = public_names(), package_lines()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for name in re.findall(r"^\s*(?:def|class)\s+(\w+)", cell.source, flags=re.M):
            assert name not in names, f"{path.name} redefines a3c_core's {name}"
        code = [line.strip() for line in cell.source.splitlines()]
        for i in range(len(code) - 2):
            window = code[i : i + 3]
            assert not all(line in lines for line in window), (
                f"{path.name} pastes a3c_core code: {window}"
            )


def test_every_module_names_the_chapter_that_explains_it():
    for module in MODULES:
        doc = module.__doc__ or ""
        found = re.findall(r"chapter (\d)", doc) or re.findall(r"(introduction)", doc)
        assert found, f"{module.__name__} does not name its chapter"
        for number in re.findall(r"chapter (\d)", doc):
            assert any(c.startswith(f"0{number}_") for c in CHAPTERS), (module, number)


SHOW_CALL = re.compile(r"\bshow\(\s*([\w.]+)\s*\)")


def package_object(name: str):
    """The a3c_core object a chapter's `show(name)` displays (None if not ours):
    `a3c_core.module.obj[.method]`, or a name imported from a module."""
    if name.startswith("a3c_core."):
        parts = name.split(".")
        obj = importlib.import_module(".".join(parts[:2]))
        for part in parts[2:]:
            obj = getattr(obj, part)
        return obj
    found = [vars(m)[name] for m in MODULES if name in public_names_of(m)]
    return found[0] if len(found) == 1 else None


def shown_objects() -> dict[object, set[int]]:
    """Every package function or class a chapter shows, and the chapters (numbers)
    that show it; a shown method counts as its class."""
    shown = {}
    for path in notebooks():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for name in SHOW_CALL.findall(cell.source):
                obj = package_object(name)
                if obj is None or inspect.ismodule(obj):
                    continue
                assert not obj.__name__.startswith("_") or "." in obj.__qualname__, (
                    f"{path.name} shows the private {name}: show public code"
                )
                if "." in obj.__qualname__:  # a method: its class holds the link
                    module = sys.modules[obj.__module__]
                    obj = getattr(module, obj.__qualname__.split(".")[0])
                shown.setdefault(obj, set()).add(int(path.name[:2]))
    return shown


def linked_chapters(obj) -> set[int]:
    """The chapters named on the "Book: chapter N." line of a docstring."""
    lines = [line for line in (obj.__doc__ or "").splitlines() if "Book:" in line]
    return {int(n) for line in lines for n in re.findall(r"chapter (\d)", line)}


def test_an_object_links_to_the_chapters_that_show_it_and_to_no_other():
    shown = shown_objects()
    assert len(shown) >= 30, "the chapters show less code than expected"
    for module in MODULES:
        for name in public_names_of(module):
            obj = vars(module)[name]
            if callable(obj):
                chapters = shown.get(obj, set())
                assert linked_chapters(obj) == chapters, (
                    f"{module.__name__}.{name} is shown in chapters {sorted(chapters)}"
                    f" but its docstring links {sorted(linked_chapters(obj))}"
                )


def test_show_displays_the_real_source():
    shown = show(a3c_core.loss.gae)
    assert "def gae(" in shown.data and "a3c_core/loss.py" in shown.data


class ImageCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def test_the_book_builds_without_warnings_with_every_chapter_and_image(tmp_path):
    jupyter_book = str(Path(sys.executable).parent / "jupyter-book")
    args = [
        "build",
        "-W",
        "-n",
        "--keep-going",
        str(BOOK),
        "--path-output",
        str(tmp_path),
    ]
    run = subprocess.run(
        [jupyter_book, *args], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    for name in CHAPTERS:
        page = html / f"{name}.html"
        assert page.exists(), f"chapter {name} missing from the built book"
        text = page.read_text()
        # A markdown table the renderer did not parse becomes a paragraph of pipes.
        assert "<p>|" not in text, f"{name}.html: a table rendered as plain text"
        collector = ImageCollector()
        collector.feed(text)
        for src in collector.sources:
            if not src.startswith(("http", "data:")):
                assert (page.parent / src).exists(), f"{name}.html: missing image {src}"
