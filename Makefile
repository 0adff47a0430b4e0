# The two commands a fresh clone needs: `make lab` (open the course) and `make test` (everything CI runs).
# Both create .venv on first use and install this package with the exact versions of constraints.txt.

# Debian's Python where there is one: the grading worker runs as an unprivileged user, which must be able
# to read the interpreter (a pyenv Python under /root is not readable to it).
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)
VENV ?= .venv
PY := $(VENV)/bin/python
SUBMISSIONS ?= submissions
GRADES ?= grades
# SCHEDULER=tcp://host:8786: make grade runs the batches on that Dask cluster's workers (README, "On a cluster")
SCHEDULER ?=
NBGRADER_COURSE ?= nbgrader_course
CHAPTERS ?=
JOBS ?= 2
export MICOURSE_THREADS ?= 1
TORCH_INDEX ?=
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

# One stamp per installed extra, named by the checksum of what decides the install (pyproject.toml and
# constraints.txt), so an edit of either reinstalls once and nothing else does (no timestamps involved).
# Extras: lab (learners), instructor (grading, nbgrader), dev (both, plus lint and export: tests and CI).
# A venv installed for dev also satisfies lab and instructor.
DEPS_SUM := $(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
STAMP = $(VENV)/.installed-$(1)-$(DEPS_SUM)
DEV := $(call STAMP,dev)
LAB := $(if $(wildcard $(DEV)),$(DEV),$(call STAMP,lab))
INSTRUCTOR := $(if $(wildcard $(DEV)),$(DEV),$(call STAMP,instructor))
PIP_INSTALL = $(VENV)/bin/pip install -q -c constraints.txt
# PYTHONWARNINGS below hides setuptools' one informational note on every editable install of a package whose
# folder has another name (utils/ -> micourse); a real setuptools warning still shows.

$(VENV)/.installed-%-$(DEPS_SUM):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(PIP_INSTALL) torch $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))   # first and alone: a CPU build where one is offered
	PYTHONWARNINGS="ignore:Editable installation" $(PIP_INSTALL) -e ".[$*]"
	find $(VENV) -maxdepth 1 -name '.installed-*' ! -name '*-$(DEPS_SUM)' -delete
	touch $@

.PHONY: setup lab test lint release-check checks notebooks release grade nbgrader bench clean

setup: $(DEV)  ## install everything (dev: lab + instructor + lint), as CI does

lab: $(LAB)  ## open the course in JupyterLab (learner install: no grading tools); threads as micourse sets them
	env -u MICOURSE_THREADS $(VENV)/bin/jupyter lab --notebook-dir=chapters $(LAB_ARGS)

test: setup lint release-check checks notebooks  ## everything CI runs

lint: setup
	$(PY) -m ruff check utils tools tests solutions scripts bench

release-check: setup
	$(PY) -m tools.release --check

checks: setup  ## hidden checks vs solutions, known-wrong variants, blank chapters, tooling tests
	$(PY) -m pytest tests -q -n $(JOBS) --dist loadfile --durations=15

notebooks: setup  ## execute every solution notebook end to end, and every learner notebook up to its first exercise
	$(PY) -m tools.execute --solutions --chapters --jobs $(JOBS)

release: setup  ## solutions/ -> chapters/ (refuses the placeholder repository URL unless LOCAL=1: a local build)
	$(PY) -m tools.release $(if $(filter-out 0,$(LOCAL)),,--publish)

grade: $(INSTRUCTOR)  ## grade SUBMISSIONS=<folder of learner folders> into GRADES=<folder> (isolated: root or bubblewrap; UNISOLATED=1 to allow none)
	$(PY) -m tools.grade $(SUBMISSIONS) --out $(GRADES) --jobs $(JOBS) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(filter-out 0,$(UNISOLATED)),--allow-unisolated) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

nbgrader: $(INSTRUCTOR)  ## build the nbgrader course folder NBGRADER_COURSE (lint: every graded cell has hidden checks)
	$(PY) -m tools.nbgrader_course --out $(NBGRADER_COURSE) --jobs $(JOBS) $(if $(CHAPTERS),--chapters $(CHAPTERS))

bench: setup  ## benchmarks print ratios measured in one run
	for b in bench/bench_*.py; do $(PY) -m bench.$$(basename $$b .py) || exit 1; done

clean:
	rm -rf $(VENV) $(GRADES)
