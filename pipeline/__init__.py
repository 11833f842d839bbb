"""Offline ML side of autoscalp: data, features, labels, models, training.

Imports nothing from ``serving`` or ``flows`` (dependencies point flows -> serving -> pipeline).
"""
