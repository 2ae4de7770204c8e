"""mail_marketing's config keys (declared in its PluginInfo; see core/config.py)."""
from postroom.core.config import Key, local_part
from postroom.core.emails import address_setting

KEYS = (
    Key("marketing_email_from", str, None, check=address_setting, what="one email address",
        help="sender when --from is not given (default: catchall@<primary domain>)"),
    Key("marketing_unsubscribe", str, "unsubscribe", empty=False, check=local_part, what="a local part (no @)",
        help="local part of the List-Unsubscribe address"),
    Key("marketing_batch_size", int, 500, min=1, max=100_000, help="recipients per batch (one transaction)"),
    Key("marketing_run_limit", int, 5000, min=1, max=10_000_000, help="recipients per run of the process queue"),
    Key("marketing_retry_minutes", int, 60, min=1, max=10080, help="when a failed head is tried again"),
)
