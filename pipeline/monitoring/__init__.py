"""What a registered model is watched against once it trades: drift references (drift.py) and the
live outcomes the daemon exports to the store for the next retrain (feedback.py)."""
