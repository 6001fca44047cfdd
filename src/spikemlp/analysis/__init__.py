"""Analysis: operation counts, firing rates, energy and multiplication-free-inference checks."""
