-- Runs once, when the postgres service initialises an empty data volume, in the Prefect
-- database (POSTGRES_DB). Prefect's migrations use trigram indexes for name search.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
