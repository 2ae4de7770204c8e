"""Who may use the console: operators, login, sessions, CSRF, rate limits, the read-only role."""
import datetime as dt

from postroom.core import records
from postroom.core.console import operators
from postroom.core.console.models import Operator
from tests.console.conftest import PASSWORD
from tests.support.http import ConsoleClient, request


def test_a_logged_out_visitor_is_sent_to_the_login_page_and_cannot_post(console):
    host, url = console()
    resp = request(url, "GET", "/queue/?state=exception")
    assert resp.status == 303
    assert resp.headers["location"] == "/login?next=/queue/%3Fstate%3Dexception"
    resp = request(url, "POST", "/queue/retry", body={"all_failed": "1"})
    assert resp.status == 403 and "log in first" in resp.text
    assert request(url, "GET", "/").status == 303


def test_login_sets_a_signed_httponly_samesite_cookie_and_lands_on_next(console):
    host, url = console()
    client = ConsoleClient(url)
    resp = client.login("ops@example.com", PASSWORD, next_path="/queue/")
    assert resp.status == 303 and resp.headers["location"] == "/queue/"
    cookie = next(c for c in resp.set_cookies if c.startswith("postroom_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # public_url is plain http here
    page = client.get("/queue/")
    assert page.status == 200 and "ops@example.com" in page.text
    # a tampered cookie opens nothing
    value = client.cookies["postroom_session"]
    client.cookies["postroom_session"] = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert client.get("/queue/").status == 303


def test_the_cookie_is_secure_when_the_public_url_is_https(console):
    host, url = console(public_url="https://mail.example.com")
    resp = ConsoleClient(url).login("ops@example.com", PASSWORD)
    assert "Secure" in next(c for c in resp.set_cookies if c.startswith("postroom_session="))


def test_a_session_expires_after_console_session_hours(console, logged_in, clock):
    host, url = console(console_session_hours=2)
    client = logged_in(url)
    assert client.get("/records/").status == 200
    clock.advance(dt.timedelta(hours=2, seconds=1))
    assert client.get("/records/").status == 303


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(console, logged_in, tmp_path):
    host, url = console()
    rec = records.create_record(host, "generic", "Website")
    records.create_partner(host, "Ann", "ann@example.com")
    client = logged_in(url)
    client.get(f"/records/generic/{rec.id}")
    resp = client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com"}, csrf=False)
    assert resp.status == 403 and "CSRF" in resp.text
    resp = client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com", "csrf": "forged"}, csrf=False)
    assert resp.status == 403
    resp = client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com"},
                       headers={"Origin": "https://evil.example"})
    assert resp.status == 403 and "another site" in resp.text
    assert "ann@example.com" not in client.get(f"/records/generic/{rec.id}").text.split("Followers")[1]
    resp = client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com"})
    assert resp.status == 303
    assert "ann@example.com now follows Website" in client.get(f"/records/generic/{rec.id}").text


def test_the_login_form_itself_needs_its_csrf_token(console):
    host, url = console()
    resp = request(url, "POST", "/login", body={"email": "ops@example.com", "password": PASSWORD})
    assert resp.status == 403 and "postroom_session" not in str(resp.set_cookies)


def test_failed_logins_are_rate_limited_per_account(console, clock):
    host, url = console()
    client = ConsoleClient(url)
    for _ in range(5):
        assert client.login("ops@example.com", "wrong password!").status == 401
    resp = client.login("ops@example.com", PASSWORD)
    assert resp.status == 429 and "too many failed logins" in resp.text
    assert client.login("viewer@example.com", PASSWORD).status == 303  # another account is not blocked
    clock.advance(dt.timedelta(minutes=16))
    assert ConsoleClient(url).login("ops@example.com", PASSWORD).status == 303


def test_a_read_only_operator_sees_every_screen_but_cannot_act(console, logged_in):
    host, url = console()
    rec = records.create_record(host, "generic", "Website")
    records.create_partner(host, "Ann", "ann@example.com")
    client = logged_in(url, "viewer@example.com")
    page = client.get(f"/records/generic/{rec.id}")
    assert page.status == 200 and "(read-only)" in page.text and "Add follower" not in page.text
    assert client.get("/queue/").status == 200 and client.get("/cron/").status == 200
    resp = client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com"})
    assert resp.status == 403 and "read-only" in resp.text


def test_logout_ends_the_session(console, logged_in):
    host, url = console()
    client = logged_in(url)
    old = dict(client.cookies)
    client.get("/records/")
    assert client.post("/logout").status == 303
    stale = ConsoleClient(url)
    stale.cookies = old
    assert stale.get("/records/").status == 303


def test_operator_commands_add_change_and_remove_accounts(make_host, cli_run):
    host = make_host()
    result = cli_run(host, "operator", "add", "Ann@Example.com", "--role", "readonly",
                     input="long enough pw\nlong enough pw\n")
    assert result.exit_code == 0, result.output
    assert "operator ann@example.com added (readonly)" in result.output
    op = Operator.get(Operator.email == "ann@example.com")
    assert op.password_hash.startswith("$argon2id$") and "long enough" not in op.password_hash
    assert cli_run(host, "operator", "add", "ann@example.com", input="long enough pw\nlong enough pw\n").exit_code == 4
    short = cli_run(host, "operator", "add", "bob@example.com", input="short\nshort\n")
    assert short.exit_code == 2 and "at least 10 characters" in short.output
    cookie = operators.open_session(host, op)
    assert operators.load_session(host, cookie) is not None
    result = cli_run(host, "operator", "passwd", "ann@example.com", input="another long one\nanother long one\n")
    assert result.exit_code == 0 and operators.load_session(host, cookie) is None
    assert operators.authenticate(host, "ann@example.com", "another long one", "t") is not None
    listing = cli_run(host, "operator", "list", "--json")
    assert '"email": "ann@example.com"' in listing.output and '"role": "readonly"' in listing.output
    assert "$argon2" not in listing.output
    assert cli_run(host, "operator", "remove", "ann@example.com").exit_code == 0
    missing = cli_run(host, "operator", "remove", "ann@example.com")
    assert missing.exit_code == 3 and "no operator" in missing.output


def test_operator_actions_are_logged_and_posted_on_the_record(console, logged_in, tmp_path):
    host, url = console()
    rec = records.create_record(host, "generic", "Website")
    records.create_partner(host, "Ann", "ann@example.com")
    client = logged_in(url)
    client.get(f"/records/generic/{rec.id}")
    client.post(f"/records/generic/{rec.id}/follow", {"email": "ann@example.com"})
    log = (tmp_path / "logs" / "postroom.log").read_text()
    assert "console: operator ops@example.com: added follower ann@example.com" in log
    page = client.get(f"/records/generic/{rec.id}").text
    assert "ops@example.com (console): added follower ann@example.com" in page


def test_login_never_redirects_to_another_site(console):
    host, url = console()
    for target in ("https://evil.example/", "//evil.example/", "/\t/evil.example", "/\\evil.example"):
        resp = ConsoleClient(url).login("ops@example.com", PASSWORD, next_path=target)
        assert resp.status == 303 and resp.headers["location"] == "/", target


def test_console_pages_cannot_be_framed_or_cached(console, logged_in):
    host, url = console()
    resp = logged_in(url).get("/records/")
    assert resp.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["cache-control"] == "no-store"


def test_accounts_sessions_and_rate_limits_on_each_engine(make_host, db_url, clock):
    host = make_host(db_url=db_url)
    op = operators.add(host, "ann@example.com", PASSWORD)
    cookie = operators.open_session(host, op)
    assert operators.load_session(host, cookie).operator.email == "ann@example.com"
    for _ in range(5):
        assert operators.authenticate(host, "ann@example.com", "nope nope nope", "10.0.0.1") is None
    assert "too many failed logins" in operators.login_refused(host, "ann@example.com", "10.0.0.1")
    clock.advance(dt.timedelta(hours=9))
    assert operators.load_session(host, cookie) is None
    assert operators.login_refused(host, "ann@example.com", "10.0.0.1") is None
    operators.remove(host, "ann@example.com")
    assert Operator.select().count() == 0
