"""A private Postfix instance for tests: Debian's postfix binaries, everything else of its
own in a temporary folder (config_directory, queue_directory, data_directory, its log),
listening on 127.0.0.1 on a free port only. The system's Postfix (if any) is not touched.

    with PrivatePostfix(main={"relay_domains": "example.com", ...}, master_cf="...",
                        tables={"transport": "example.com lmtp:inet:127.0.0.1:2424"}) as mx:
        smtplib.SMTP("127.0.0.1", mx.port) ...; mx.queue(); mx.flush(); mx.log()

Running a Postfix instance as root needs: a mail_owner and setgid_group that exist (the
package's `postfix` user and `postdrop` group), no chroot (the chroot would be the private
queue directory, empty of /etc files), a queue folder every component can reach (so not
under pytest's 0700 tmp folders), and `maillog_file` since there is no syslog here.
`postfix -c DIR check` creates the queue's sub-folders and fails loudly on a bad setting.
"""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

from tests.support.smtp import free_port

POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin:/bin")
POSTCONF = shutil.which("postconf", path="/usr/sbin:/usr/bin")
POSTQUEUE = shutil.which("postqueue", path="/usr/sbin:/usr/bin")
POSTMAP = shutil.which("postmap", path="/usr/sbin:/usr/bin")
SYSTEM_MASTER_CF = pathlib.Path("/etc/postfix/master.cf")


def missing() -> str | None:
    """Why a private Postfix cannot run here (None when it can)."""
    if not all((POSTFIX, POSTCONF, POSTQUEUE, POSTMAP)) or not SYSTEM_MASTER_CF.exists():
        return "Debian's postfix is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (postfix start)"
    return None


def version() -> str:
    return subprocess.run([POSTCONF, "-d", "-h", "mail_version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PrivatePostfix:
    """One Postfix instance: `main` (main.cf settings) override a minimal base, `master_cf`
    is added to the package's master.cf, and `tables` ({file name: text}) are written into
    its config folder and postmap'ed (a setting naming `/etc/postfix/NAME` should have been
    rewritten to `self.etc / NAME`: see `local_path`)."""

    def __init__(self, main: dict | None = None, master_cf: str = "", tables: dict | None = None,
                 relayhost: str | None = None):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="postroom-postfix-"))
        os.chmod(self.root, 0o755)
        self.etc, self.spool, self.data = self.root / "etc", self.root / "spool", self.root / "data"
        self.logfile = self.root / "postfix.log"
        for d in (self.etc, self.spool, self.data):
            d.mkdir(mode=0o755)
        shutil.chown(self.data, "postfix", "postfix")
        self.port = free_port()
        self.main, self.master_cf, self.tables = dict(main or {}), master_cf, dict(tables or {})
        self.relayhost = relayhost
        self.started = False

    def local_path(self, text: str) -> str:
        """`text` with /etc/postfix/ pointing at this instance's config folder."""
        return text.replace("/etc/postfix/", f"{self.etc}/")

    # --- configuration ------------------------------------------------------------------

    def _base(self) -> dict:
        base = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool), "data_directory": str(self.data),
            "mail_owner": "postfix", "setgid_group": "postdrop",
            "maillog_file": str(self.logfile), "maillog_file_prefixes": str(self.root),
            "myhostname": "mx.postroom.test", "mydomain": "postroom.test", "myorigin": "$myhostname",
            "mydestination": "", "alias_maps": "", "alias_database": "", "biff": "no",
            "inet_protocols": "ipv4", "inet_interfaces": "127.0.0.1",
            "smtputf8_enable": "no", "smtp_dns_support_level": "disabled",
            # Seconds, not Postfix's minutes: a test waits for every retry it provokes.
            "address_verify_poll_delay": "1s", "queue_run_delay": "10s",
            "minimal_backoff_time": "10s", "maximal_backoff_time": "20s",
        }
        if self.relayhost:
            base["relayhost"] = self.relayhost
        else:  # nothing leaves this machine: no DNS lookup, no connection elsewhere
            base["default_transport"] = "error:this test Postfix relays nowhere"
        return base

    def postconf(self, *args, check=True) -> str:
        result = subprocess.run([POSTCONF, "-c", str(self.etc), *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"postconf {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _configure(self):
        (self.etc / "main.cf").write_text("")
        shutil.copy(SYSTEM_MASTER_CF, self.etc / "master.cf")
        settings = {**self._base(), **{k: self.local_path(v) for k, v in self.main.items()}}
        self.postconf(*[f"{k}={v}" for k, v in settings.items()])
        self.postconf("-MX", "smtp/inet")  # no port 25: our own loopback port instead
        with open(self.etc / "master.cf", "a") as fh:
            fh.write(f"127.0.0.1:{self.port} inet n - n - - smtpd\n")
            if self.master_cf.strip():
                fh.write(self.local_path(self.master_cf).strip() + "\n")
        self.postconf("-F", "*/*/chroot = n")
        for name, text in self.tables.items():
            (self.etc / name).write_text(text.strip() + "\n")
            subprocess.run([POSTMAP, "-c", str(self.etc), f"hash:{self.etc / name}"], check=True,
                           capture_output=True)

    # --- running -------------------------------------------------------------------------

    def _postfix(self, *args, check=True):
        result = subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True,
                                timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} failed ({result.returncode}): "
                                 f"{(result.stdout + result.stderr).strip()}\n{self.log()[-3000:]}")
        return result

    def start(self) -> "PrivatePostfix":
        self._configure()
        self._postfix("check")
        self._postfix("start")
        self.started = True
        self._wait_listening()
        return self

    def _wait_listening(self, timeout=30):
        import socket
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"Postfix did not listen on 127.0.0.1:{self.port}\n{self.log()[-3000:]}")

    def stop(self):
        """Stop the instance and wait until its master process is gone; remove its folder."""
        if self.started:
            pid = self.master_pid()
            self._postfix("stop", check=False)
            deadline = time.monotonic() + 30
            while pid and _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid and _alive(pid):
                raise AssertionError(f"Postfix master {pid} still runs 30 s after postfix stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- looking at it -------------------------------------------------------------------

    def queue(self) -> list[dict]:
        """`postqueue -j`: one dict per queued message (queue_name, recipients, reasons)."""
        out = subprocess.run([POSTQUEUE, "-c", str(self.etc), "-j"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def flush(self):
        """`postqueue -f`: deliver the deferred mail now."""
        subprocess.run([POSTQUEUE, "-c", str(self.etc), "-f"], check=True, capture_output=True, timeout=30)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
