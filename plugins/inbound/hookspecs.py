"""Hooks of the inbound plugin: claiming addresses, threading replies, hearing of bounces.

The inbound gateway calls these; they exist while inbound is enabled
(`PluginInfo(hookspecs=...)`). Another plugin implements them with
`@hookimpl(optionalhook=True)`, so it still loads where inbound is disabled.
"""
from postroom.core.hookspecs import hookspec


@hookspec(firstresult=True)
def postroom_inbound_recipient(host, local_part, domain):
    """Claim an inbound recipient address for your plugin (stops at the first non-None).

    Called by the inbound gateway at RCPT time (and again after DATA, and by `route test`
    and `inbound deliver`) for an address on one of the deployment's domains whose local
    part is not an alias, the bounce address, the catchall or `postmaster`. It runs on one
    of the gateway's worker threads (never the event loop), so it may read the database;
    it must not write. `local_part` and `domain` are lower-cased, e.g. `unsubscribe` and
    `example.com`.

    Return None to pass (the address is then refused with `550 5.1.1`), or a callable
    `handle(host, envelope_from, recipient, message) -> (code, text)` to accept the
    recipient. After DATA the gateway calls `handle` on a worker thread inside the
    delivery's write transaction: `envelope_from` is the envelope sender ("" for <>),
    `recipient` the address as given at RCPT, `message` the parsed
    `email.message.Message`. Return an SMTP code and its text, e.g.
    `(250, "2.0.0 Ok: unsubscribed")`; a code outside 2xx refuses the mail (and, over
    SMTP, rolls back whatever the delivery wrote). Raising a database error makes the
    gateway answer `451 4.3.0`. The decision is logged with route `claimed`.
    """


@hookspec(firstresult=True)
def postroom_inbound_reply(host, references, message, dry_run):
    """Thread a reply to a mail that is not a chatter message (stops at the first non-None).

    `host` is the running `core.host.Host`.

    Called by the inbound gateway after DATA when the mail's In-Reply-To / References
    match no `message.message_id` of the core (e.g. a reply to a campaign mail), on a
    worker thread inside the delivery's write transaction. `references` is the list of
    RFC 5322 Message-Ids the mail answers, angle brackets included, most relevant first
    (In-Reply-To, then References newest to oldest); `message` is the parsed
    `email.message.Message`; `dry_run` is True when `postroom route test` only asks
    what would happen (then write nothing).

    Return a `core.models.Record`: the gateway posts the mail on that record's chatter
    as an incoming email (`message_type="email"`, author by sender address) and notifies
    its followers, logged with route `reply`. Return None to pass: the mail then goes on
    to alias routing, and mail for the catchall is refused with `550 5.1.1`. When not
    `dry_run` you may also update your own rows (e.g. mark a campaign trace `reply`);
    they commit or roll back with the delivery.
    """


@hookspec
def postroom_inbound_routed(host, route, message_id, record):
    """Called after the inbound gateway stored a message and committed.

    `host` is the running `core.host.Host`.

    `route` is one of `reply`, `alias`, `bounce`, `claimed`; `message_id` is the incoming
    mail's RFC 5322 Message-Id (None when it had none); `record` is the `core.models.Record`
    posted on or created (or None). Runs after the commit, outside any transaction (on a
    gateway worker thread, or in the `postroom inbound deliver` process). Return value ignored.
    """


@hookspec
def postroom_bounce_received(host, bounce):
    """Called inside the bounce's transaction when a delivery failure came back.

    `host` is the running `core.host.Host`.

    `bounce` is a dict: `email` (the bounced address, normalised, when the gateway could
    attribute it, else None), `addresses` (every address the report names for this
    bounce), `token` (the value of the signed bounce address, e.g. `n42` or `mt17`, or
    None when only headers matched), `message_id` (the RFC 5322 Message-Id of the mail
    that bounced, or None), `reason` (the diagnostic text), `partner_id` and
    `notification_id` (or None), `counts` (False when the receiver refused the sender, not
    the address: 5.7.x, spam, DMARC; such a bounce must not count toward a blacklist).

    Reports are forgeable, so a listener counts only what is tied to a mail it sent: its own
    token names one mail and so one recipient (ignore other `addresses`); a Message-Id counts
    only for an address that mail was sent to; and each mail at most once (a replayed report
    changes nothing). With `notification_id` the gateway has done that for a chatter mail,
    and fires once per notification. "Delayed" reports never reach this hook. The core
    effects (notification → `bounce`, partner counter) are already applied. Return value ignored.
    """
