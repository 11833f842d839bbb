"""The trading runtime of autoscalp. Imports ``pipeline``, never ``flows``."""
