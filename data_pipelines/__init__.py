"""Offline data jobs: the synthetic demo corpus and the Apache Beam preprocessing pipeline."""
