"""Operator accounts, their sessions and login rate limits: what `postroom operator` and the
console's login page both call.

Passwords are hashed with argon2id (argon2-cffi's defaults, rehashed on login when those
change). A session id is random; the cookie carries it signed with the deployment secret,
the table only its SHA-256, and it expires after `console_session_hours` (8) whatever the
activity. Failed logins are counted per account and per client over
`console_login_window_minutes` (15): past `console_login_max_failures` (5) for one account
or four times that for one client, logins are refused until the window has passed.
"""
import datetime as dt
import hashlib
import hmac
import secrets

import argon2
import peewee as pw

from .. import emails, tokens
from ..errors import Conflict, InvalidInput, NotFound
from .models import ROLES, ConsoleSession, LoginAttempt, Operator

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a bound keeps a login POST cheap to refuse
_hasher = argon2.PasswordHasher()
# Verified against when the account does not exist, so both cases cost the same time.
_DUMMY_HASH = _hasher.hash("postroom-no-such-operator")


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password may have at most {MAX_PASSWORD} characters")
    return password


def _normal(email: str) -> str:
    return emails.split_address(email)[1].lower()


def get_operator(host, email: str) -> Operator:
    op = Operator.get_or_none(Operator.email == _normal(email))
    if op is None:
        raise NotFound(f"no operator {email!r}")
    return op


def add(host, email: str, password: str, role: str = "admin") -> Operator:
    """A new operator account; refused when the address already has one."""
    address = _normal(email)
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    digest = _hasher.hash(_check_password(password))
    now = host.clock.now()
    with host.transaction():
        if Operator.get_or_none(Operator.email == address) is not None:
            raise Conflict(f"operator {address} exists already (change the password: postroom operator passwd)")
        op = Operator.create(email=address, password_hash=digest, role=role, created_at=now,
                             password_changed_at=now)
    host.log.info("operator %s added (role %s)", address, role)
    return op


def set_password(host, email: str, password: str) -> Operator:
    """A new password; every open session of the operator ends."""
    digest = _hasher.hash(_check_password(password))
    with host.transaction():
        op = get_operator(host, email)
        op.password_hash, op.password_changed_at = digest, host.clock.now()
        op.save()
        ConsoleSession.delete().where(ConsoleSession.operator == op).execute()
    host.log.info("operator %s: password changed, sessions ended", op.email)
    return op


def remove(host, email: str) -> None:
    with host.transaction():
        op = get_operator(host, email)
        ConsoleSession.delete().where(ConsoleSession.operator == op).execute()
        op.delete_instance()
    host.log.info("operator %s removed", op.email)


def listing(host) -> list[dict]:
    return [{"email": o.email, "role": o.role, "created_at": o.created_at,
             "password_changed_at": o.password_changed_at}
            for o in Operator.select().order_by(Operator.email)]


# --- login -----------------------------------------------------------------------------

def _limits(host) -> tuple[int, dt.timedelta]:
    failures = host.config.value("console_login_max_failures")
    window = dt.timedelta(minutes=host.config.value("console_login_window_minutes"))
    return failures, window


def login_refused(host, email: str, client: str) -> str | None:
    """Why a login must be refused before its password is even checked, or None."""
    failures, window = _limits(host)
    since = host.clock.now() - window
    counts = dict(LoginAttempt.select(LoginAttempt.key, pw.fn.COUNT(LoginAttempt.id))
                  .where(LoginAttempt.key.in_([f"email:{email.lower()}", f"ip:{client}"]),
                         LoginAttempt.at > since)
                  .group_by(LoginAttempt.key).tuples())
    if counts.get(f"email:{email.lower()}", 0) >= failures or counts.get(f"ip:{client}", 0) >= 4 * failures:
        minutes = int(window.total_seconds() // 60)
        return f"too many failed logins; try again in {minutes} minutes"
    return None


def authenticate(host, email: str, password: str, client: str) -> Operator | None:
    """The operator when the password is right; a failure is counted (and old ones pruned)."""
    email = (email or "").strip().lower()[:254]
    password = (password or "")[:MAX_PASSWORD]
    op = Operator.get_or_none(Operator.email == email)
    try:
        _hasher.verify(op.password_hash if op else _DUMMY_HASH, password)
        ok = op is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        ok = False
    now = host.clock.now()
    with host.transaction():
        if not ok:
            _, window = _limits(host)
            LoginAttempt.delete().where(LoginAttempt.at < now - window).execute()
            LoginAttempt.insert_many([{"key": f"email:{email}", "at": now},
                                      {"key": f"ip:{client}", "at": now}]).execute()
            host.log.warning("console: failed login for %r from %s", email, client)
            return None
        LoginAttempt.delete().where(LoginAttempt.key == f"email:{email}").execute()
        if _hasher.check_needs_rehash(op.password_hash):
            op.password_hash = _hasher.hash(password)
            op.save()
    host.log.info("console: operator %s logged in from %s", op.email, client)
    return op


# --- sessions --------------------------------------------------------------------------

def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _signature(host, session_id: str) -> str:
    return hmac.new(tokens.secret(host), f"console-session:{session_id}".encode(), hashlib.sha256).hexdigest()[:32]


def session_hours(host) -> int:
    return host.config.value("console_session_hours")


def open_session(host, op: Operator) -> str:
    """A new session for `op`; returns the cookie value."""
    session_id = secrets.token_urlsafe(32)
    now = host.clock.now()
    with host.transaction():
        ConsoleSession.delete().where(ConsoleSession.expires_at < now).execute()
        ConsoleSession.create(id_hash=_hash(session_id), operator=op, csrf=secrets.token_urlsafe(32),
                              created_at=now, expires_at=now + dt.timedelta(hours=session_hours(host)))
    return f"{session_id}.{_signature(host, session_id)}"


def load_session(host, cookie: str | None) -> ConsoleSession | None:
    """The live session a cookie names (its operator joined), or None for a missing, forged,
    expired or ended one."""
    session_id, _, sig = (cookie or "").rpartition(".")
    if not session_id or len(cookie) > 200 or not hmac.compare_digest(sig, _signature(host, session_id)):
        return None
    row = (ConsoleSession.select(ConsoleSession, Operator).join(Operator)
           .where(ConsoleSession.id_hash == _hash(session_id)).first())
    if row is None or row.expires_at <= host.clock.now():
        return None
    return row


def close_session(host, cookie: str | None) -> None:
    session = load_session(host, cookie)
    if session is not None:
        with host.transaction():
            ConsoleSession.delete().where(ConsoleSession.id_hash == session.id_hash).execute()
        host.log.info("console: operator %s logged out", session.operator.email)


def set_flash(host, session: ConsoleSession, text: str | None) -> None:
    with host.transaction():
        ConsoleSession.update(flash=text).where(ConsoleSession.id_hash == session.id_hash).execute()
