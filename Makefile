# Convenience over the documented steps in docs/install.md.
#   make demo   set up .venv/, build the LAMMPS plugin, run the whole story on generated data
#   make test   same set-up, then lint and the whole test suite
# GPU users: install your CUDA torch into .venv first, then `make test TORCH_CONSTRAINTS=`
# (empty: keeps the torch you installed). See docs/install.md.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed
PLUGIN := python/alchem/lib/alchemicalplugin.so
JOBS ?= 2

.PHONY: demo test install plugin lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_CONSTRAINTS),-c $(TORCH_CONSTRAINTS)) -e ".[dev]"
	touch $(STAMP)

plugin: $(PLUGIN)

$(PLUGIN): $(STAMP) CMakeLists.txt $(wildcard cmake/*) $(wildcard lammps-plugin/*) $(wildcard python/alchem/ops/*.cpp) $(wildcard python/alchem/ops/*.h)
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(abspath $(PY)) > build.log 2>&1 || (cat build.log; exit 1)
	cmake --build build --parallel $(JOBS) >> build.log 2>&1 || (tail -50 build.log; exit 1)
	cmake --install build >> build.log 2>&1 || (tail -20 build.log; exit 1)
	@echo "LAMMPS plugin: $(PLUGIN)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: $(STAMP) $(PLUGIN)
	$(PY) -m alchem.demo

test: $(STAMP) $(PLUGIN) lint
	$(PY) -m pytest -q tests

clean:
	rm -rf build build.log $(PLUGIN)
