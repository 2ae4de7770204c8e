"""The public surface `postroom.__all__`, pinned, and the application functions at work
(real SQLite files, real SMTP over loopback)."""
import datetime as dt
import inspect

import pytest

import postroom
from postroom.core.models import Follower, Message, Notification, Partner, Record
from tests.support.smtp import SMTPSink

PLUGIN_NAMES = {"hookimpl", "hookspec", "PluginInfo", "RecordType", "ActionSpec", "Check", "Host",
                "pass_host", "get_host", "MailService", "mail_service"}
ERRORS = {"PostroomError", "InvalidInput", "NotFound", "Conflict", "ConfigError", "DatabaseUnavailable"}
APPLICATION = {"open_host", "create_partner", "find_partner", "create_record", "get_record", "follow",
               "unfollow", "post_message", "send_mail"}


def test_the_public_surface_keeps_every_name_with_its_docstring():
    assert PLUGIN_NAMES | ERRORS | APPLICATION <= set(postroom.__all__), "a public name disappeared"
    assert len(postroom.__all__) == len(set(postroom.__all__))
    namespace = {}
    exec("from postroom import *", namespace)  # noqa: S102 - what a user's star import gets
    for name in postroom.__all__:
        obj = namespace[name]
        doc = inspect.getdoc(obj) or ""
        assert len(doc) >= 40, f"postroom.{name} lost its docstring"
        assert obj.__module__.startswith("postroom"), f"postroom.{name}'s doc is not Postroom's own"
    for name in ERRORS:
        assert issubclass(getattr(postroom, name), postroom.PostroomError)


@pytest.mark.parametrize("name", sorted(APPLICATION))
def test_every_argument_of_an_application_function_is_documented(name):
    fn = getattr(postroom, name)
    doc = inspect.getdoc(fn)
    for arg in inspect.signature(fn).parameters:
        if arg != "host":
            assert f"`{arg}`" in doc or arg in doc, f"postroom.{name} does not explain {arg!r}"


def test_no_plugin_or_example_needs_the_cli_module():
    from pathlib import Path
    root = Path(postroom.__file__).parent
    sources = list((root / "plugins").rglob("*.py")) + list((root / "examples").rglob("*.py"))
    assert sources
    offenders = [str(p.relative_to(root)) for p in sources if "postroom.cli" in p.read_text()]
    assert offenders == []


# --- the application functions ---------------------------------------------------------

@pytest.fixture
def sink():
    with SMTPSink() as s:
        yield s


@pytest.fixture
def app_config(tmp_path, sink):
    """The keys of a postroom.cfg, as an application would hand them over."""
    return {"database": f"sqlite:///{tmp_path / 'app.db'}", "log_dir": str(tmp_path / "logs"),
            "domains": "example.com", "smtp_host": sink.host, "smtp_port": sink.port,
            "smtp_timeout": "5", "mail_from": "app@example.com"}


@pytest.fixture
def app(app_config, clock):
    """A deployment with mail_queue enabled, opened the way an application opens it."""
    with postroom.open_host(app_config, clock=clock) as host:
        host.enable_plugin("mail_queue")
        yield host


def test_open_host_takes_a_path_or_a_mapping_and_closes_as_a_context_manager(app_config, tmp_path):
    with postroom.open_host(app_config) as host:
        postroom.create_partner(host, "Ann", "ann@example.org")
    assert host.db.is_closed()
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text("[postroom]\n" + "".join(f"{k} = {v}\n" for k, v in app_config.items()))
    with postroom.open_host(cfg) as again:
        assert postroom.find_partner(again, "ANN@example.org").name == "Ann"
    with pytest.raises(postroom.ConfigError, match="config file not found"):
        postroom.open_host(tmp_path / "missing.cfg")


def test_partners_are_created_once_and_found_by_address(app):
    ann = postroom.create_partner(app, "Ann", "Ann <Ann@Example.org>")
    assert postroom.find_partner(app, "ann@example.org").id == ann.id
    assert postroom.find_partner(app, "nobody@example.org") is None
    with pytest.raises(postroom.Conflict, match="already exists"):
        postroom.create_partner(app, "Ann again", "ann@example.org")
    with pytest.raises(postroom.InvalidInput):
        postroom.create_partner(app, "Bad", "not an address")


def test_a_comment_mails_the_followers_after_commit_and_never_the_author(app, sink):
    ticket = postroom.create_record(app, "generic", "Printer on fire", {"floor": 3})
    assert postroom.get_record(app, "generic", ticket.id).values == {"floor": 3}
    ann = postroom.create_partner(app, "Ann", "ann@example.org")
    postroom.create_partner(app, "Bob", "bob@example.org")
    assert postroom.follow(app, ticket, ann) is True
    assert postroom.follow(app, ticket, "bob@example.org") is True
    assert postroom.follow(app, ticket, "bob@example.org") is False

    message = postroom.post_message(app, ticket, "It smokes", subject="Printer", author=ann)
    assert isinstance(message, Message) and message.record_id == ticket.id
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["bob@example.org"]
    assert received.message["Subject"] == "Printer"
    assert received.message["Message-Id"] == message.message_id


def test_a_note_notifies_only_the_named_partners(app, sink):
    ticket = postroom.create_record(app, "generic", "VPN drops")
    postroom.create_partner(app, "Ann", "ann@example.org")
    postroom.create_partner(app, "Carl", "carl@example.org")
    postroom.follow(app, ticket, "ann@example.org")
    postroom.post_message(app, ticket, "internal", note=True, partners=["carl@example.org"],
                          author="someone@outside.example")
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["carl@example.org"]]
    assert Message.get(Message.record == ticket).email_from == "someone@outside.example"


def test_unfollow_stops_the_notifications(app, sink):
    ticket = postroom.create_record(app, "generic", "Quiet")
    postroom.create_partner(app, "Ann", "ann@example.org")
    postroom.follow(app, ticket, "ann@example.org")
    assert postroom.unfollow(app, ticket, "ann@example.org") is True
    assert postroom.unfollow(app, ticket, "ann@example.org") is False
    postroom.post_message(app, ticket, "anyone?")
    assert Notification.select().count() == 0
    with pytest.raises(postroom.NotFound, match="no partner with email"):
        postroom.follow(app, ticket, "stranger@example.org")


def test_send_mail_is_urgent_by_default_and_bulk_or_scheduled_on_request(app, sink, clock):
    [_] = postroom.send_mail(app, "ann@example.org", "Your invoice", "Attached.\nThanks")
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["ann@example.org"]
    assert received.message["From"] == "app@example.com"
    assert "Thanks" in received.message.get_body(("plain",)).get_content()

    later = postroom.send_mail(app, ["a@example.org", "b@example.org"], "News", "bulk", bulk=True)
    at = clock.now() + dt.timedelta(hours=2)
    postroom.send_mail(app, "c@example.org", "Reminder", "later", at=at, sender="ops@example.com")
    assert len(later) == 2
    assert len(sink.received()) == 1  # bulk and scheduled mail wait for the queue
    postroom.mail_service(app).process_queue()
    assert sorted(m.rcpt_tos[0] for m in sink.wait_for(3)) == ["a@example.org", "ann@example.org",
                                                                "b@example.org"]
    clock.advance(hours=3)
    postroom.mail_service(app).process_queue()
    assert sink.wait_for(4)[-1].message["From"] == "ops@example.com"


def test_send_mail_refuses_a_bad_address_and_writes_nothing(app, sink):
    with pytest.raises(postroom.InvalidInput):
        postroom.send_mail(app, ["ok@example.org", "not an address"], "S", "b")
    with pytest.raises(postroom.InvalidInput):
        postroom.send_mail(app, "ok@example.org", "two\nlines", "b")
    assert sink.received() == []


def test_calls_grouped_in_one_transaction_commit_or_vanish_together(app, sink):
    with pytest.raises(RuntimeError):
        with app.transaction():
            ticket = postroom.create_record(app, "generic", "Half done")
            postroom.create_partner(app, "Ann", "ann@example.org")
            postroom.follow(app, ticket, "ann@example.org")
            postroom.post_message(app, ticket, "never sent")
            postroom.send_mail(app, "ann@example.org", "never", "sent")
            raise RuntimeError("the application changed its mind")
    assert (Record.select().where(Record.model == "generic").count(), Partner.select().count(),
            Follower.select().count(), Message.select().count()) == (0, 0, 0, 0)

    with app.transaction():
        ticket = postroom.create_record(app, "generic", "Done")
        postroom.create_partner(app, "Ann", "ann@example.org")
        postroom.follow(app, ticket, "ann@example.org")
        postroom.post_message(app, ticket, "sent once committed")
        assert sink.received() == []  # urgent mail waits for the outermost commit
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["ann@example.org"]]


def test_send_mail_without_a_mail_plugin_says_which_to_enable(app_config, clock):
    with postroom.open_host(app_config, clock=clock) as host:
        with pytest.raises(postroom.NotFound, match="service 'mail' is not available"):
            postroom.send_mail(host, "ann@example.org", "S", "b")


def test_several_threads_may_post_at_once_as_a_web_servers_workers_do(postroom_make_host, postroom_db_url,
                                                                      sink):
    import threading
    host = postroom_make_host(plugins=["mail_queue"], db_url=postroom_db_url, smtp=sink)
    ticket = postroom.create_record(host, "generic", "Busy ticket")
    postroom.create_partner(host, "Ann", "ann@example.org")
    postroom.follow(host, ticket, "ann@example.org")
    barrier, errors = threading.Barrier(4), []

    def worker(n):
        try:
            barrier.wait(timeout=30)
            for i in range(5):
                with host.offloading():  # the answer does not wait for SMTP
                    postroom.post_message(host, ticket, f"worker {n} update {i}")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            host.db.close()  # each thread had its own connection

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert Message.select().where(Message.record == ticket).count() == 20
    assert len(sink.wait_for(20, timeout=60)) == 20
