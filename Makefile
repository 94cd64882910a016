# Convenience over the documented steps in docs/install.md: thin wrappers over
# pip, whose build (scikit-build-core + CMakeLists.txt) compiles the operator
# library and the LAMMPS plugin.
#   make demo   set up .venv/, build, run the whole story on generated data
#   make test   same set-up, then lint and the whole test suite
# GPU users: install your CUDA torch into .venv first, then `make test TORCH_CONSTRAINTS=`
# (empty: keeps the torch you installed). See docs/install.md.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CONSTRAINTS ?= constraints.txt
CONSTRAINT := $(if $(TORCH_CONSTRAINTS),-c $(TORCH_CONSTRAINTS))
STAMP := $(VENV)/.installed
BUILT := $(VENV)/.built
JOBS ?= 2

.PHONY: demo test test-fast install plugin lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the build requirements of pyproject.toml first: the editable build below
	# compiles against this environment's torch (--no-build-isolation)
	$(PY) cmake/build_requires.py | xargs $(PY) -m pip install --quiet $(CONSTRAINT)
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PY) -m pip install --quiet $(CONSTRAINT) \
		--no-build-isolation -e ".[dev]" > build.log 2>&1 || (tail -50 build.log; exit 1)
	touch $(BUILT) $(STAMP)

# `pip install -e .` installs the libraries into .venv's site-packages/alchem/lib;
# this rebuilds them (incrementally, in build/<wheel tag>) when a C++ file changed
plugin: $(BUILT)

$(BUILT): $(STAMP) CMakeLists.txt $(wildcard cmake/*) $(wildcard lammps-plugin/*) $(wildcard python/alchem/ops/*.cpp) $(wildcard python/alchem/ops/*.h)
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PY) -m pip install --quiet --no-deps \
		--no-build-isolation -e . > build.log 2>&1 || (tail -50 build.log; exit 1)
	touch $(BUILT)
	@echo "LAMMPS plugin: $$($(VENV)/bin/alchem-lammps --plugin-path)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run --Werror lammps-plugin/*.cpp lammps-plugin/*.h \
		python/alchem/ops/*.cpp python/alchem/ops/*.h

demo: $(STAMP) $(BUILT)
	$(PY) -m alchem.demo

test: $(STAMP) $(BUILT) lint
	$(PY) -m pytest -q tests

# the tests not marked slow (pytest.mark.slow): under 2 minutes, for edits
test-fast: $(STAMP) $(BUILT)
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf build build.log $(BUILT)
