"""Brokers: what sends the engine's decisions to a venue (paper: the simulated venue; live: an exchange)."""
