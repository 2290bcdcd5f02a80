"""Experiment runners (Table 2) and their rendering; run from the repository root."""
