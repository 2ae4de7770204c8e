"""Shared test helpers other areas can import."""
