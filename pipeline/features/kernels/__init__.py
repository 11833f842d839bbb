"""Indicator kernels: one O(1) (amortised) online update per indicator family, compiled by numba.

Every kernel has the signature ``kernel(state, off, w, core) -> value``: it reads the event core
(``pipeline.features.core``), updates its own slots ``state[off:off + size]`` and returns the
indicator's current value (NaN until it has seen its first input). ``w`` is the window: a number
of updates of the kernel's own stream (quotes or trades) for ``*_tick`` kernels, a time constant in
seconds for ``*_time`` kernels. The same kernels run tick by tick online and over arrays offline.
"""
