"""Fuzz targets for stt_core (atheris), their shared harness and seed corpus."""
