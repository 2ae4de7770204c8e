"""auto_vacuum's config keys (declared in its PluginInfo; see core/config.py)."""
from postroom.core.config import Key

KEYS = (
    Key("vacuum_batch_size", int, 1000, min=1, max=1_000_000,
        help="rows removed per chunk (each chunk its own transaction)"),
)
