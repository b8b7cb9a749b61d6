# seafloor-ssl: `make demo` runs the main job end to end; `make test` runs the test suite.
# Both (re)build .venv only when pyproject.toml or constraints.txt changed (stamp file).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed.stamp
DEMO   := data/seafloor

.PHONY: demo test lint venv synth bench clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The embedded demo site (catalogs/seafloor.yaml points here).
$(DEMO)/catalog.yaml: $(STAMP)
	$(BIN)/python -m pipeline.synth --out $(DEMO) --dives 3 --seed 0 --faults

synth: $(DEMO)/catalog.yaml

demo: $(DEMO)/catalog.yaml
	$(BIN)/python -m pipeline build --catalog catalogs/seafloor.yaml
	@echo
	@echo "Demo site: $(DEMO) (map: $(DEMO)/site.png); manifests: $(DEMO)/manifests/"
	@echo "Next steps of the demo (Prefect flow run on a local server, training, evaluation)"
	@echo "arrive with the orchestration and trainer."

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO)
