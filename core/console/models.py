"""The console's tables: operator accounts, their sessions, failed login attempts."""
import peewee as pw

from ..db import UTCDateTimeField
from ..models import BaseModel

ROLES = ("admin", "readonly")


class Operator(BaseModel):
    """A person who may log in to the console. `readonly` looks but cannot act."""
    email = pw.CharField(max_length=254, unique=True)  # lower-cased
    password_hash = pw.CharField(max_length=255)       # argon2id, PHC string
    role = pw.CharField(max_length=16, default="admin")
    created_at = UTCDateTimeField()
    password_changed_at = UTCDateTimeField()

    class Meta:
        table_name = "console_operator"


class ConsoleSession(BaseModel):
    """One login. The cookie carries the random id (signed); the table only its hash, so a
    copy of the database opens no session. `csrf` is the token every form must carry."""
    id_hash = pw.CharField(max_length=64, primary_key=True)
    operator = pw.ForeignKeyField(Operator, on_delete="CASCADE")
    csrf = pw.CharField(max_length=64)
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField(index=True)
    flash = pw.TextField(null=True)  # one message for the next page (after a POST's redirect)

    class Meta:
        table_name = "console_session"


class LoginAttempt(BaseModel):
    """A failed login, by account (`email:...`) and by client (`ip:...`), for rate limits."""
    key = pw.CharField(max_length=300)
    at = UTCDateTimeField()

    class Meta:
        table_name = "console_login_attempt"
        indexes = ((("key", "at"), False),)


CONSOLE_MODELS = [Operator, ConsoleSession, LoginAttempt]
