"""The auto_vacuum plugin (not built yet: it has no PLUGIN, so the loader skips it)."""
