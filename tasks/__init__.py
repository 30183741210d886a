"""Prefect tasks: thin wrappers over ``medsec`` (plus the MLflow tracking helpers)."""
