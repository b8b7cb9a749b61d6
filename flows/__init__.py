"""Prefect orchestration of the pipeline (no domain logic here)."""
