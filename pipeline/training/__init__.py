"""Validation splits, metrics and tuning of the models."""
