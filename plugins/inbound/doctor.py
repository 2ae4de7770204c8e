"""`postroom doctor` checks of the inbound gateway."""
import socket

from postroom.core.doctor import Check

from .settings import settings


def checks(host) -> list:
    out = []
    try:
        domains = host.config.domains
        if not domains or domains == ["localhost"]:
            out.append(Check("inbound domains", "warn", f"the gateway only accepts mail for "
                             f"{', '.join(domains) or 'no domain'}",
                             "set `domains` in postroom.cfg to the domains your MX records point here"))
        else:
            out.append(Check("inbound domains", "ok", f"accepting mail for {', '.join(domains)}"))
        out.append(_banner(host))
    except Exception as exc:  # noqa: BLE001 - a check never raises
        out.append(Check("inbound gateway", "fail", f"check failed: {type(exc).__name__}: {exc}",
                         "see postroom.log"))
    return out


def _banner(host) -> Check:
    """Connect to the configured address and read the greeting, as a sending MTA would."""
    s = settings(host)
    where = f"{s.host}:{s.port}"
    try:
        with socket.create_connection((s.host, s.port), timeout=3) as sock:
            sock.settimeout(3)
            banner = sock.recv(512).decode("utf-8", "replace").strip()
            try:
                sock.sendall(b"QUIT\r\n")
            except OSError:
                pass
    except OSError as exc:
        return Check("inbound gateway", "fail", f"nothing answers on {where}: {exc.strerror or exc}",
                     "start `postroom serve` (or `postroom inbound serve`), or fix inbound_host/inbound_port")
    if not banner.startswith("220"):
        return Check("inbound gateway", "fail", f"{where} answered {banner[:80]!r}, not an SMTP greeting",
                     "another program holds the port; set inbound_port or stop it")
    return Check("inbound gateway", "ok", f"{where} answers: {banner[:80]}")
