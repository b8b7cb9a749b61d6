"""Plain library: catalogs to Parquet manifests. Never imports Prefect or torch."""
