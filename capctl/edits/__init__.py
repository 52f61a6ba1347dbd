"""Edits: a resolved plan as the container changes every delivery applies (pure data)."""
