"""A private PostgreSQL server for tests that stop and restart it for real: Debian's
initdb/pg_ctl, a temporary data folder owned by `postgres`, trust authentication, a free
port on 127.0.0.1 and its socket in its own folder. The shared server on 5432 is never
touched.

    with PrivatePostgres() as pg:
        url = pg.create_database("t1")       # postgresql://postgres@127.0.0.1:PORT/t1
        pg.stop("fast"); ...; pg.start()      # or pg.stop("immediate"): a crash
"""
import glob
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

from tests.support.smtp import free_port


def bin_dir() -> pathlib.Path | None:
    """The newest /usr/lib/postgresql/*/bin holding pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return pathlib.Path(found[-1]).parent if found else None


def missing() -> str | None:
    """Why a private PostgreSQL cannot run here (None when it can)."""
    if bin_dir() is None:
        return "no /usr/lib/postgresql/*/bin/pg_ctl (Debian's postgresql; .ci/run installs it)"
    if os.geteuid() != 0:
        return "starting a private PostgreSQL as the postgres user needs root"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user"
    return None


class PrivatePostgres:
    def __init__(self):
        self.bin = bin_dir()
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="postroom-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self.running = False

    def _run(self, *args, timeout=120) -> str:
        """One command as the postgres user (initdb and postgres refuse to run as root)."""
        result = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                                text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): "
                                 f"{(result.stdout + result.stderr).strip()}\n{self.log()[-2000:]}")
        return result.stdout

    def version(self) -> str:
        return self._run(str(self.bin / "postgres"), "--version").strip()

    def init(self):
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        # Own socket folder (not /var/run/postgresql, where the shared server lives), loopback
        # only, and no fsync: the "crash" is of the server process, not of the machine.
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                     f"unix_socket_directories = '{self.root}'\nfsync = off\nmax_connections = 60\n")

    def start(self):
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode="fast"):
        """pg_ctl stop -m fast (clients disconnected, clean shutdown) or -m immediate (the
        server processes quit at once, recovery at the next start: a crash)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def restart(self, mode="fast"):
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-m", mode,
                  "-w", "-t", "60", "restart")
        self.running = True

    def url(self, dbname="postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def __enter__(self):
        self.init()
        self.start()
        return self

    def __exit__(self, *exc):
        if self.running or (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except AssertionError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
