"""Commands around the pipeline (not DVC stages): sweep tables."""
