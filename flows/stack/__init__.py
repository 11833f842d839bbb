"""``autoscalp up``: the local stack as supervised processes (config, components, supervisor, state)."""
