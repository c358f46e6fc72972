"""Placeholder: filled in by its model family."""
