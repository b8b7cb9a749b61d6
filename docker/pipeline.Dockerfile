# syntax=docker/dockerfile:1
# The seafloor-ssl pipeline image: the project installed (editable, so every process resolves
# flows/, pipeline/, ssl/ and catalogs/ under /app) with the versions pinned in constraints.txt.
#
# One image, several roles (docker/compose.yaml):
#   default CMD                    python -m flows.worker: a Prefect process worker polling the
#                                  work pool seafloor-process, plus the run sweep (flows/runs.py)
#   dask scheduler / dask worker   the Dask cluster that runs the flow's per-dive ingest
#   python -m flows.serve          serve every catalog's deployment without a work pool
#
# Build from the repository root:  docker build -f docker/pipeline.Dockerfile -t seafloor-ssl/pipeline .
#
# torch is large: the default wheels pull the CUDA libraries (several GB). For a CPU-only image
# pass the PyTorch CPU wheel index as a build argument; constraints.txt still pins the versions
# (torch==X matches the index's X+cpu builds):
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> ...
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ARG APP_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEAFLOOR_CATALOGS=/app/catalogs \
    MPLBACKEND=Agg

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml or
# constraints.txt change, not on every source edit.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -c constraints.txt ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself. prefect.yaml: `prefect deploy --all` run in /app records /app as the
# flow runs' working directory.
COPY pipeline/ ./pipeline/
COPY flows/ ./flows/
COPY ssl/ ./ssl/
COPY catalogs/ ./catalogs/
COPY prefect.yaml ./
RUN pip install -c constraints.txt --no-deps -e . \
 && python -c "import flows.build_pairs, pipeline, seafloor_ssl"

# Unprivileged user; catalogs point at /app/data (mount the survey data there).
RUN useradd --create-home --uid "${APP_UID}" --shell /usr/sbin/nologin seafloor \
 && mkdir -p /app/data \
 && chown seafloor:seafloor /app/data
USER seafloor

CMD ["python", "-m", "flows.worker", "--pool", "seafloor-process", "--type", "process"]
