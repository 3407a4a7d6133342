"""Datasets: Market-1501 layout and naming, fetch and verification, the synthetic generator."""
