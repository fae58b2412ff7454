"""Experiments that measure teams like clusters: sweeps over a grid, per-run metrics, the
statistics, the report and its plots."""
