"""Worked examples of bringing your own model (README "Bring your own model")."""
