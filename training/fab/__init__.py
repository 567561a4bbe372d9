"""Fabrication campaigns: Bayesian optimisation of device fabrication with the lab in the
loop, every suggestion and measurement kept in one SQLite file per campaign."""
