"""Hydra launcher plugins of alexlab (found by Hydra's plugin discovery under hydra_plugins)."""
