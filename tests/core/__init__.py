"""Unit tests of stages/core: fast, no DVC, no model runs."""
