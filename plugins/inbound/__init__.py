"""The inbound plugin (not built yet: it has no PLUGIN, so the loader skips it)."""
