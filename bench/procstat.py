"""What a bench needs to know about local processes (Linux /proc): CPU time, children, and
which client connections a server process holds. Lets `inbound_throughput.py --gateways`
say how the kernel spread the sessions over the gateway processes and where the CPU went."""
import os

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone or not ours to read)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """The direct children of `pid`."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def _tcp_rows(pid: int, port: int):
    """(state, remote port) of the TCP sockets on local `port` that `pid` holds."""
    inodes = _socket_inodes(pid)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], f[9]
            if int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                yield state, int(remote.rsplit(":", 1)[1], 16)


def client_ports(pid: int, port: int) -> set[int]:
    """Source ports of the established connections to local `port` that `pid` holds."""
    return {remote for state, remote in _tcp_rows(pid, port) if state == "01"}


def listens(pid: int, port: int) -> bool:
    """Whether `pid` holds a socket listening on local `port`."""
    return any(state == "0A" for state, _ in _tcp_rows(pid, port))


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process (0 once it is gone)."""
    return cpu_seconds_of(f"/proc/self/task/{native_id}/stat")


def cpu_seconds_of(path: str) -> float:
    try:
        with open(path) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK
