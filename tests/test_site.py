"""The book online: the config and CI workflow parse and say what they must, the
Colab setup cell matches the repository and requirements, and the built HTML has the
launch links, local math and no link to a path outside the site."""

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

import nbformat
import pytest
import yaml

from tests.conftest import ROOT

BOOK = ROOT / "book"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"]
OWNER_REPO = REPOSITORY.removeprefix("https://github.com/")
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def pins() -> dict[str, str]:
    """requirements.txt as {name: version} for its name==version lines."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    found = (re.match(r"([\w.\[\]-]+)==([\w.]+)", line) for line in lines)
    return {m[1]: m[2] for m in found if m}


def test_the_config_points_every_button_at_the_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY)
    assert CONFIG["repository"]["branch"] == "main"
    assert (ROOT / CONFIG["repository"]["path_to_book"] / "_toc.yml").exists()
    assert CONFIG["html"]["use_repository_button"] is True
    assert CONFIG["html"]["use_issues_button"] is True
    launch = CONFIG["launch_buttons"]
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["binderhub_url"] == "https://mybinder.org"


def test_the_workflow_installs_builds_strictly_tests_and_publishes():
    build, deploy = WORKFLOW["jobs"]["build"], WORKFLOW["jobs"]["deploy"]
    runs = [step.get("run", "") for step in build["steps"]]
    uses = {
        step["uses"].split("@")[0]: step for step in build["steps"] if "uses" in step
    }
    assert "pip install -r requirements.txt" in runs
    assert any(run.startswith("jupyter-book build book -W -n") for run in runs)
    assert "pytest --nbval" in runs  # the README's test command, as .ci/run runs it
    assert "ruff format --check" in " ".join(runs)
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == [
        "actions/deploy-pages"
    ]
    assert "refs/heads/main" in deploy["if"]  # pull requests test, never publish
    # yaml reads the key `on` as True
    assert WORKFLOW[True]["push"]["branches"] == ["main"]


def test_binder_installs_the_root_requirements_on_the_projects_python():
    binder = ROOT / ".binder"
    lines = (binder / "requirements.txt").read_text().splitlines()
    assert "-r ../requirements.txt" in lines
    requires = re.search(
        r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()
    )
    assert (binder / "runtime.txt").read_text().strip() == f"python-{requires[1]}"


def test_the_configured_sphinx_extensions_are_installed():
    import importlib

    for name in CONFIG["sphinx"]["config"]["extensions"]:
        importlib.import_module(name)
    assert "sphinx-mathjax-offline" in pins()


def setup_cell(path: Path):
    cells = nbformat.read(path, as_version=4).cells
    return next(cell for cell in cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_same_hidden_colab_setup(path):
    cell = setup_cell(path)
    reference = setup_cell(BOOK / "02_network.ipynb")
    assert cell.source == reference.source
    assert cell.metadata.get("tags") == ["remove-cell"]
    assert not cell.get("outputs")


def test_the_colab_setup_does_nothing_outside_colab(tmp_path, monkeypatch):
    source = setup_cell(BOOK / "02_network.ipynb").source
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    with mock.patch("subprocess.run") as run:
        exec(source, {})
    assert not run.called and Path.cwd() == tmp_path


def test_the_colab_setup_clones_this_repository_and_installs_the_pinned_versions(
    monkeypatch,
):
    source = setup_cell(BOOK / "02_network.ipynb").source
    monkeypatch.setitem(sys.modules, "google.colab", mock.MagicMock())
    monkeypatch.setattr(sys, "path", list(sys.path))
    with (
        mock.patch("subprocess.run") as run,
        mock.patch("os.path.isdir", return_value=False),
        mock.patch("os.chdir") as chdir,
    ):
        exec(source, {})
    clone, install = (call.args[0] for call in run.call_args_list)
    assert clone[:2] == ["git", "clone"] and REPOSITORY in clone
    assert "--editable" in install
    wanted = dict(
        re.match(r"([\w.\[\]-]+)==(.+)", a).groups() for a in install if "==" in a
    )
    pinned = pins()
    for name, version in wanted.items():
        if name in pinned:
            assert pinned[name] == version, name
    from importlib.metadata import version as installed

    assert wanted["myst-nb"] == installed("myst-nb")  # what jupyter-book brings
    assert chdir.call_args.args[0].endswith("/book")


class Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src") and v is not None]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The book built as the README builds it (into a temporary folder)."""
    out = tmp_path_factory.mktemp("site")
    jupyter_book = str(Path(sys.executable).parent / "jupyter-book")
    run = subprocess.run(
        [jupyter_book, "build", str(BOOK), "--path-output", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out / "_build" / "html"


def test_every_chapter_page_has_colab_and_binder_links(site):
    for path in NOTEBOOKS:
        page = (site / f"{path.stem}.html").read_text()
        colab = "https://colab.research.google.com/github/"
        assert f"{colab}{OWNER_REPO}/blob/main/book/{path.name}" in page, path.name
        binder = f"https://mybinder.org/v2/gh/{OWNER_REPO}/main?"
        assert binder in page and f"book/{path.name}" in page, path.name


def test_no_link_in_the_site_points_outside_it(site):
    for page in site.glob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for link in parser.links:
            if re.match(r"(https?:|mailto:|data:|#)", link):
                continue
            target = link.split("#")[0].split("?")[0]
            assert not re.match(r"(/|file:|[a-zA-Z]:\\)", target), (page.name, link)
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(site), (page.name, link)
            assert resolved.exists(), (page.name, link)


def test_pages_load_math_locally_with_one_search_field_and_no_thebe(site):
    page = (site / "02_network.html").read_text()
    assert 'src="_static/mathjax/tex-chtml.js"' in page
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert page.count("search-button-field") == 1
    assert "THEBE_JS_URL" not in page


def test_the_appendix_names_each_object_by_the_module_that_defines_it():
    import importlib

    text = (BOOK / "appendix.md").read_text()
    names = sorted(set(re.findall(r"`a3c_core\.(\w+)\.(\w+)", text)))
    assert len(names) > 20
    for module, name in names:
        obj = getattr(importlib.import_module(f"a3c_core.{module}"), name, None)
        assert obj is not None, f"a3c_core.{module}.{name}"
        defined_in = getattr(obj, "__module__", f"a3c_core.{module}")
        assert defined_in == f"a3c_core.{module}", f"{name} is in {defined_in}"
