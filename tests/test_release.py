"""The release tool: learner notebooks carry no solution, keep nbgrader metadata, and are reproducible."""

import nbformat

from tools import release
from tools.notebooks import chapter_names, read_notebook, solution_sources


def test_solution_block_becomes_not_implemented_with_the_same_indentation():
    src = "def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n"
    out = release.blank_solutions(src)
    assert out == "def f(x):\n    \"\"\"Doc.\"\"\"\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"


def test_every_solution_block_in_a_cell_is_blanked_and_hidden_tests_removed():
    src = ("class A:\n    def f(self):\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n"
           "    def g(self):\n        ### BEGIN SOLUTION\n        return 2\n        ### END SOLUTION\n"
           "### BEGIN HIDDEN TESTS\nassert A().f() == 1\n### END HIDDEN TESTS\nprint('kept')\n")
    out = release.blank_solutions(src)
    assert "return 1" not in out and "return 2" not in out and "assert A()" not in out
    assert out.count("raise NotImplementedError()") == 2 and "print('kept')" in out
    compile(out, "<released>", "exec")


def test_released_notebooks_have_no_solution_code_and_keep_grading_metadata():
    for chapter in chapter_names():
        for src in solution_sources(chapter):
            nb = release.release_notebook(src)
            text = nbformat.writes(nb)
            assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text
            assert "colab-badge" in nb.cells[0].source and "google.colab" in nb.cells[1].source
            solution_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
            assert solution_cells and all("raise NotImplementedError()" in c.source for c in solution_cells)
            assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
            original = read_notebook(src)
            assert len(nb.cells) == len(original.cells) + 2


def test_release_is_deterministic():
    src = solution_sources(chapter_names()[0])[0]
    assert nbformat.writes(release.release_notebook(src)) == nbformat.writes(release.release_notebook(src))


def test_check_mode_reports_a_stale_chapter(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(release, "CHAPTERS", tmp_path)
    assert release.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert release.main([]) == 0
    assert release.main(["--check"]) == 0


def _project():
    import tomllib

    from tools.notebooks import ROOT

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict:
    from packaging.requirements import Requirement

    from tools.notebooks import ROOT

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"not an exact pin: {line}"
            pins[req.name.lower().replace("_", "-")] = next(iter(req.specifier)).version
    return pins


def test_every_direct_requirement_has_an_exact_tested_pin_that_satisfies_its_range():
    from packaging.requirements import Requirement

    project, pins = _project()["project"], _constraints()
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        if req.name == "micourse":
            continue
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} has no exact version in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's range {req}"
    assert pins["torch"].split("+")[0] == pins["torch"], "pin torch without a local label (+cpu), so any platform's build fits"


def test_environment_yml_installs_from_the_same_constraints_and_extras():
    from tools.notebooks import ROOT

    lines = [line.strip().removeprefix("- ").strip() for line in (ROOT / "environment.yml").read_text().splitlines()]
    assert "-c constraints.txt" in lines and "-e .[dev]" in lines, "environment.yml must install `-e .[dev]` with `-c constraints.txt`"
    assert not [line for line in lines if "==" in line], "exact versions live in constraints.txt only"


def test_learner_extra_has_no_grading_tools_and_dev_has_everything():
    extras = _project()["project"]["optional-dependencies"]
    names = {extra: {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for r in reqs}
             for extra, reqs in extras.items()}
    assert not names["lab"] & {"nbgrader", "pytest", "pytest-xdist", "ruff"}
    assert "nbgrader" in names["instructor"] and "pytest" in names["instructor"]
    assert any(r.startswith("micourse[") and "lab" in r and "instructor" in r for r in extras["dev"])


def test_every_asset_folder_is_a_listed_package():
    """Otherwise setuptools warns on every install (and a future version drops the folder)."""
    from tools.notebooks import ROOT

    listed = set(_project()["tool"]["setuptools"]["packages"])
    assets = ROOT / "utils" / "assets"
    folders = [assets, *sorted(p for p in assets.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    missing = ["micourse." + ".".join(p.relative_to(ROOT / "utils").parts) for p in folders]
    missing = [m for m in missing if m not in listed]
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_license_is_an_spdx_expression():
    project = _project()["project"]
    assert isinstance(project["license"], str) and project["license-files"] == ["LICENSE"]


def test_package_version_matches_pyproject():
    import micourse

    assert micourse.__version__ == _project()["project"]["version"]


def test_badge_and_install_cell_carry_the_configured_repository_and_tag(monkeypatch):
    monkeypatch.setattr(release, "REPO", "https://github.com/example-org/mi-course")
    monkeypatch.setattr(release, "VERSION", "2.3.4")
    src = solution_sources(chapter_names()[0])[0]
    nb = release.release_notebook(src)
    want = f"https://colab.research.google.com/github/example-org/mi-course/blob/v2.3.4/chapters/{src.parent.name}/{src.stem}.ipynb"
    assert f"]({want})" in nb.cells[0].source
    assert "git+https://github.com/example-org/mi-course@v2.3.4" in nb.cells[1].source
    assert "micourse/micourse" not in nb.cells[0].source + nb.cells[1].source


def test_released_notebooks_point_at_pyproject_setting():
    project = _project()["project"]
    repo, version = project["urls"]["Repository"], project["version"]
    nb = release.release_notebook(solution_sources(chapter_names()[0])[0])
    assert f"{repo.removeprefix('https://github.com/')}/blob/v{version}/" in nb.cells[0].source
    assert f"git+{repo}@v{version}" in nb.cells[1].source


def test_publish_refuses_the_placeholder_url_and_says_what_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(release, "CHAPTERS", tmp_path)
    monkeypatch.setattr(release, "REPO", release.PLACEHOLDER_REPO)
    assert release.main(["--publish"]) == 2
    err = capsys.readouterr().err
    assert "[project.urls] Repository" in err and "LOCAL=1" in err
    assert not list(tmp_path.iterdir()), "a refused release writes nothing"
    assert release.main([]) == 0 and release.main(["--check"]) == 0  # a local build, and CI's check of it
    monkeypatch.setattr(release, "REPO", "https://gitlab.com/a/b")
    assert release.main(["--publish"]) == 2
    monkeypatch.setattr(release, "REPO", "https://github.com/example-org/mi-course")
    assert release.main(["--publish"]) == 0


def test_make_release_publishes_unless_told_it_is_a_local_build():
    import shutil
    import subprocess

    from tools.notebooks import ROOT

    if shutil.which("make") is None:
        import pytest

        pytest.skip("make is not installed")
    dry = {}
    for extra in ([], ["LOCAL=1"]):
        out = subprocess.run(["make", "-n", "release", *extra], cwd=ROOT, capture_output=True, text=True, check=True)
        dry[bool(extra)] = [line for line in out.stdout.splitlines() if "tools.release" in line]
    assert dry[False] and all("--publish" in line for line in dry[False])
    assert dry[True] and not any("--publish" in line for line in dry[True])
