# seafloor-ssl: `make demo` runs the main job end to end; `make test` runs the test suite.
# Both (re)build .venv only when pyproject.toml or constraints.txt changed (stamp file).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed.stamp
DEMO   := data/seafloor
# every demo and reproduction trains into a new run folder: runs are never overwritten
STAMP_UTC := $(shell date -u +%Y%m%d-%H%M%S)
DEMO_RUN  := runs/demo-geoclr-$(STAMP_UTC)

.PHONY: demo test lint venv synth server reproduce reproduce-cpu reproduce-smoke \
        reproduce-gpu reproduce-labelling clean-demo

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

# Local Prefect server on 127.0.0.1:4200, state in .prefect/ (SQLite); Ctrl-C stops it.
server: $(STAMP)
	$(BIN)/python -m flows.server start

# Server (unless running) -> serve the deployments -> prefect deployment run
# build-pairs/seafloor --watch; everything the demo started stops when it ends or on Ctrl-C.
# ... then GeoCLR + SP for 50 steps on the CPU-sized settings (resnet18 at 96 px, batch 64),
# its evaluation, the survey as iFDO, and the map-habitats deployment run with that encoder:
# embeddings, habitat clusters and the images to label first (exported for BIIGLE, CoralNet and
# iFDO tools), published beside the manifests.
demo: $(DEMO)/catalog.yaml
	$(BIN)/python -m flows.demo --catalog seafloor
	$(BIN)/python -m ssl.train --manifest $(DEMO)/manifests/pairs.parquet --objective geoclr \
	  --sp 0.5 --steps 50 --backbone resnet18 --image-size 96 --batch-size 64 \
	  --out $(DEMO_RUN)
	$(BIN)/python -m ssl.evaluate --checkpoint $(DEMO_RUN)/last.pt \
	  --manifest $(DEMO)/manifests/pairs.parquet --out $(DEMO_RUN)/eval
	$(BIN)/python -m pipeline export ifdo --catalog catalogs/seafloor.yaml
	$(BIN)/python -m flows.demo --catalog seafloor --map $(DEMO_RUN)/last.pt
	@echo "Demo site: $(DEMO) (truth map: $(DEMO)/site.png); run folder: $(DEMO_RUN)"
	@echo "Habitat map (published by map-habitats/seafloor):" \
	  "$(DEMO)/manifests/maps/current/habitats/cluster_map.png; images to label first:" \
	  "$(DEMO)/manifests/maps/current/habitats/labelling_list.csv, ready for BIIGLE," \
	  "CoralNet and iFDO tools in $(DEMO)/manifests/maps/current/habitats/export/"

# The reproduction table: two baselines (random-init, hand-crafted), simclr, simclr+sp, geoclr,
# geoclr+sp and csp (mc, nce, l2) trained and evaluated with the same budget and seeds on the
# benchmark survey, plus an r_loc sweep for geoclr (each radius's pairs built from the same
# ingest with --cache-from). reproduce: GPU preset; reproduce-cpu: the table in REPRODUCTION.md.
BENCH := data/bench
RLOC_SWEEP := 1 2 5 10 20
comma := ,
empty :=
space := $(empty) $(empty)
SWEEP_MANIFESTS := $(foreach r,$(RLOC_SWEEP),$(BENCH)/rloc-$(r)/pairs.parquet)
SWEEP_ARG := $(subst $(space),$(comma),$(foreach r,$(RLOC_SWEEP),$(r)=$(BENCH)/rloc-$(r)/pairs.parquet))

$(BENCH)/manifests/pairs.parquet: $(STAMP)
	$(BIN)/python -m pipeline.synth --preset benchmark --out $(BENCH) --dives 4 \
	  --images-per-dive 800 --seed 7
	$(BIN)/python -m pipeline build --catalog $(BENCH)/catalog.yaml

$(BENCH)/rloc-%/pairs.parquet: $(BENCH)/manifests/pairs.parquet
	$(BIN)/python -m pipeline build --catalog $(BENCH)/catalog.yaml --r-loc $* \
	  --out $(BENCH)/rloc-$* --cache-from $(BENCH)/manifests

reproduce: $(BENCH)/manifests/pairs.parquet $(SWEEP_MANIFESTS)
	$(BIN)/python -m ssl.reproduce --manifest $(BENCH)/manifests/pairs.parquet --preset full \
	  --sweep $(SWEEP_ARG) --out runs/reproduce-$(STAMP_UTC) --report REPRODUCTION.md

reproduce-cpu: $(BENCH)/manifests/pairs.parquet $(SWEEP_MANIFESTS)
	$(BIN)/python -m ssl.reproduce --manifest $(BENCH)/manifests/pairs.parquet --preset cpu \
	  --device cpu --sweep $(SWEEP_ARG) --out runs/reproduce-cpu-$(STAMP_UTC) \
	  --report REPRODUCTION.md

# The reproduction sized for one ~8-minute call on one H100/H200 (preset gpu; REPRODUCTION.md's
# GPU section says what it measures and how it was sized); it writes that section only.
# The benchmark survey is built here when it is missing; on a GPU machine without the pipeline's
# dependencies, build it elsewhere and bring data/bench/manifests/generations along:
#   make reproduce-gpu RUN_PY=python3 GPU_MANIFEST=data/bench/manifests/generations/000001/pairs.parquet
# GPU_ARGS passes more options (--tiny --device cpu: the dry run the test suite does).
RUN_PY       ?= $(BIN)/python
GPU_MANIFEST ?= $(BENCH)/manifests/pairs.parquet
GPU_OUT      ?= runs/reproduce-gpu-$(STAMP_UTC)
GPU_REPORT   ?= REPRODUCTION.md
GPU_ARGS     ?=
reproduce-gpu: $(if $(wildcard $(GPU_MANIFEST)),,$(filter $(BENCH)/manifests/pairs.parquet,$(GPU_MANIFEST)))
	$(RUN_PY) -m ssl.reproduce --manifest $(GPU_MANIFEST) --preset gpu --out $(GPU_OUT) \
	  --report $(GPU_REPORT) $(GPU_ARGS)

# The labelling list against random images (REPRODUCTION.md): simclr and geoclr trained on the
# benchmark survey with the CPU settings, their embeddings, then macro-F1 of the predicted map
# for N = 6, 30, 60, 120 labelled images over 20 seeds (about 15 minutes on two cores).
LABEL_RUNS := runs/labelling-$(STAMP_UTC)
reproduce-labelling: $(BENCH)/manifests/pairs.parquet
	for o in simclr geoclr; do \
	  $(BIN)/python -m ssl.train --manifest $(BENCH)/manifests/pairs.parquet --objective $$o \
	    --steps 300 --backbone resnet18 --image-size 64 --batch-size 64 --seed 0 \
	    --out $(LABEL_RUNS)/$$o && \
	  $(BIN)/python -m ssl.embed --checkpoint $(LABEL_RUNS)/$$o/last.pt \
	    --manifest $(BENCH)/manifests/pairs.parquet --out $(LABEL_RUNS)/$$o/embeddings.parquet \
	  || exit 1; \
	done
	$(BIN)/python -m ssl.labelling_payoff --embeddings simclr=$(LABEL_RUNS)/simclr/embeddings.parquet \
	  geoclr=$(LABEL_RUNS)/geoclr/embeddings.parquet --n 6,30,60,120 --seeds 0-19 \
	  --out $(LABEL_RUNS)/payoff --report REPRODUCTION.md

# CPU-sized: a few minutes, same code path (used by the tests on a mini-survey).
reproduce-smoke: $(BENCH)/manifests/pairs.parquet $(BENCH)/rloc-2/pairs.parquet
	$(BIN)/python -m ssl.reproduce --manifest $(BENCH)/manifests/pairs.parquet --preset smoke \
	  --sweep 2=$(BENCH)/rloc-2/pairs.parquet --out runs/reproduce-smoke-$(STAMP_UTC) \
	  --report runs/reproduce-smoke-$(STAMP_UTC)/REPRODUCTION.md

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO)
