"""Schema migrations of the inbound plugin, recorded in `migrations_inbound`."""
