"""Core schema migrations, applied in order and recorded in `migrations_core`."""
