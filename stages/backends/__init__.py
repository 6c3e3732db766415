"""Backends build engines and hand out Polygraphy runners; compare and benchmark never know which one ran."""
