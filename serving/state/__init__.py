"""Crash-safe state of the daemon: the SQLite journal and reconciliation with the venue on restart."""
