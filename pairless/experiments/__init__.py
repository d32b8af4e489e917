"""Experiments: recipes (typed configs), the cached runner and the report writer."""
