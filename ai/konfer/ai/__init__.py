"""Konfer model servers: kserve.Model runtimes behind `konfer model-server`, and their client."""
