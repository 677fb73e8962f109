"""alexlab: reproduce and test the AlexNet paper's ablations (Krizhevsky et al., 2012)."""
__version__ = "0.1.0"
