"""Release: solutions/NN_*/*.py (jupytext percent, with solutions) -> chapters/NN_*/*.ipynb (for learners).

- Each `### BEGIN SOLUTION` ... `### END SOLUTION` block becomes `# YOUR CODE HERE` + `raise NotImplementedError()`.
- `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS` blocks are removed.
- Outputs are cleared; cell ids are deterministic so a re-release gives identical files.
- A first markdown cell gets an "Open in Colab" badge; a setup cell installs the package in Colab.
nbgrader cell metadata is kept, so the released notebooks also work as nbgrader source/release files.

The badge and the install cell point at one setting: pyproject.toml's [project.urls] Repository (a GitHub
repository) and the tag v<version>. While Repository is the placeholder (PLACEHOLDER_REPO), the notebooks are a
local build: correct everywhere except Colab, whose badge and install cell need the published repository.

    python -m tools.release            # write chapters/ (a local build; warns while the URL is the placeholder)
    python -m tools.release --publish  # the same, but refuse the placeholder URL (`make release`)
    python -m tools.release --check    # exit 1 if chapters/ differs from what release would write
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

import nbformat

from tools.notebooks import CHAPTERS, ROOT, chapter_names, read_notebook, solution_sources

_PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = _PYPROJECT["project"]["version"]
REPO = _PYPROJECT["project"]["urls"]["Repository"].rstrip("/").removesuffix(".git")  # https://github.com/ORG/NAME
PLACEHOLDER_REPO = "https://github.com/micourse/micourse"

SOLUTION_RE = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)", re.M | re.S)
HIDDEN_RE = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)", re.M | re.S)

# Learner-facing notice in the first markdown cell: what the grader runs of a notebook (tools/notebooks.py).
GRADER_NOTICE = ("**How this notebook is graded:** the grader runs only your functions, classes, imports and "
                 "UPPER_CASE constants, not the other top-level code, so a function must not read a lowercase "
                 "variable set outside it (put it inside the function, pass it as an argument, or name it in "
                 "UPPER_CASE).")

def setup_cell(repo: str = None, version: str = None) -> str:
    """The first code cell: in Colab, install the course package of this release (and only what Colab lacks)."""
    repo, version = repo or REPO, version or VERSION
    return f'''# Setup. In Colab this installs the course package from release v{version} of {repo}. pip adds only
# what Colab lacks: Colab's own torch, numpy and plotly fit the package's version ranges and are kept.
# Elsewhere it does nothing (run `make lab` from the repository). MICOURSE_OFFLINE=1 uses the course's own models.
import os
import sys

if "google.colab" in sys.modules or os.environ.get("MICOURSE_INSTALL_FROM"):
    source = os.environ.get("MICOURSE_INSTALL_FROM") or "git+{repo}@v{version}"
    get_ipython().run_line_magic("pip", f"install -q 'micourse @ {{source}}'")'''


def badge(chapter: str, stem: str, repo: str = None, version: str = None) -> str:
    """The "Open in Colab" badge of a chapter notebook, at the release tag."""
    repo, version = repo or REPO, version or VERSION
    path = repo.removeprefix("https://github.com/")
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{path}/blob/v{version}/chapters/{chapter}/{stem}.ipynb)")


def publish_problem(repo: str = None) -> str | None:
    """None if `repo` can be published to (a real GitHub repository URL), else what to set."""
    repo = repo or REPO
    if repo == PLACEHOLDER_REPO:
        return (f"pyproject.toml's [project.urls] Repository is still the placeholder {PLACEHOLDER_REPO}: Colab badges "
                f"and install cells would point nowhere. Set it to your GitHub repository (https://github.com/ORG/NAME), "
                f"or run `make release LOCAL=1` (python -m tools.release) for a local build.")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo):
        return f"pyproject.toml's [project.urls] Repository must be https://github.com/ORG/NAME (Colab opens GitHub); got {repo!r}"
    return None


def blank_solutions(source: str) -> str:
    source = SOLUTION_RE.sub(lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError(){m.group(2)}", source)
    return HIDDEN_RE.sub("", source)


def release_notebook(src) -> nbformat.NotebookNode:
    nb = read_notebook(src)
    chapter, stem = src.parent.name, src.stem
    cells = [nbformat.v4.new_markdown_cell(badge(chapter, stem) + "\n\n" + GRADER_NOTICE),
             nbformat.v4.new_code_cell(setup_cell())]
    for cell in nb.cells:
        cell = nbformat.from_dict(dict(cell))
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in ("nbgrader", "tags")}
        if cell.cell_type == "code":
            cell.source = blank_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    for i, cell in enumerate(cells):
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell.id = gid if gid else f"cell-{i:03d}"
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                    "language_info": {"name": "python"}}
    nbformat.validate(out)
    return out


def released() -> dict:
    """Path under chapters/ -> the text release would write there."""
    return {CHAPTERS / src.parent.name / f"{src.stem}.ipynb": nbformat.writes(release_notebook(src)) + "\n"
            for chapter in chapter_names() for src in solution_sources(chapter)}


def _shown(path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if chapters/ is stale instead of writing it")
    parser.add_argument("--publish", action="store_true",
                        help="refuse to write notebooks whose Colab badge and install cell point at the placeholder URL")
    args = parser.parse_args(argv)
    problem = publish_problem()
    if args.publish and problem:
        print(f"release refused: {problem}", file=sys.stderr)
        return 2
    wanted = released()
    present = set(CHAPTERS.glob("*/*.ipynb"))
    if args.check:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
        stale += sorted(present - set(wanted))
        for p in stale:
            print(f"stale: {_shown(p)}")
        if stale:
            print("chapters/ is out of date with solutions/: run `make release` and commit the result.")
            return 1
        print(f"chapters/ is up to date ({len(wanted)} notebooks).")
        return 0
    for p in present - set(wanted):
        p.unlink()
    for p, text in wanted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"released {len(wanted)} notebooks into {_shown(CHAPTERS)}/"
          + (" (a local build: Colab badges point at the placeholder URL)" if problem else f" for {REPO} v{VERSION}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
