"""Market-data feeds for the daemon: the exchange (ccxt.pro), a tick-store replay, the simulator.

Each is a ``Feed`` (``base.py``): a producer thread filling a bounded, conflating ``EventBuffer``
that the daemon's loop drains. Events: ``Quote``, ``Trade`` (serving/events.py), ``MarkPrice``,
``DepthEvent``, ``FeedStatus``.
"""

from serving.feeds.base import DepthEvent, Event, EventBuffer, Feed, FeedStatus, MarkPrice

__all__ = ["DepthEvent", "Event", "EventBuffer", "Feed", "FeedStatus", "MarkPrice"]
