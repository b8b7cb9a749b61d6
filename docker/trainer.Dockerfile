# syntax=docker/dockerfile:1
# The seafloor-ssl trainer image: an official PyTorch CUDA runtime plus the trainer folder.
# The trainer needs only torch, torchvision, numpy, pyarrow and pillow (no Prefect), so it runs
# on any stock PyTorch GPU image; evaluation (python -m ssl.evaluate) adds scikit-learn and
# matplotlib, so that an encoder is evaluated where it was trained, and habitat mapping
# (python -m ssl.habitats) the geo stack for its GeoPackages. The manifests and image files
# come from the pipeline through a mounted folder.
#
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t seafloor-ssl/trainer .
# Run (one GPU; for several: torchrun --nproc_per_node G -m ssl.train ...):
#   docker run --gpus all -v $PWD/data:/app/data -v $PWD/runs:/app/runs seafloor-ssl/trainer \
#     --manifest data/seafloor/manifests/pairs.parquet --objective geoclr --sp 0.5
# Evaluate in the same image:
#   docker run --gpus all -v $PWD/data:/app/data -v $PWD/runs:/app/runs \
#     --entrypoint python seafloor-ssl/trainer -m ssl.evaluate --checkpoint runs/<run>/last.pt \
#     --manifest data/seafloor/manifests/pairs.parquet --out runs/<run>/eval
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch and torchvision come with the base image; the trainer adds two readers, evaluation
# and habitat mapping their probes and clusters (scikit-learn, which brings threadpoolctl and
# scipy, whose t quantiles the intervals use) and figures (matplotlib), and progress bars
# (tqdm, optional: without it the commands run with their log lines only); habitat mapping's
# GeoPackages are written by geopandas (which brings pandas and pyogrio, with GDAL) from shapely
# points in a pyproj CRS; the trainer's TensorBoard scalars by tensorboard (optional: without it
# training says so once and keeps metrics.jsonl/.csv); labels handed back as a YAML iFDO are
# read with PyYAML
RUN pip install "pyarrow>=15" "pillow>=10" "numpy>=1.26" "scikit-learn>=1.4" "matplotlib>=3.8" \
    "tqdm>=4.66" "geopandas>=1.0" "pyproj>=3.6" "shapely>=2.0" "tensorboard>=2.14" \
    "pyyaml>=6"

# The trainer runs from /app, where `python -m ssl.train` resolves to this folder (the package
# loads the standard library's TLS module into itself, so `import ssl` keeps working).
COPY ssl/ ./ssl/
RUN python -m ssl.train --help > /dev/null && python -m ssl.evaluate --help > /dev/null \
 && python -m ssl.embed --help > /dev/null && python -m ssl.habitats --help > /dev/null \
 && python -m ssl.export --help > /dev/null

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin trainer \
 && mkdir -p /app/data /app/runs \
 && chown trainer:trainer /app/runs
USER trainer

ENTRYPOINT ["python", "-m", "ssl.train"]
CMD ["--help"]
