"""Builtin plugins. Each is written exactly like a third-party plugin."""
