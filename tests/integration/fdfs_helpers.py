"""Small helpers shared by the integration tests (runner venv)."""

import base64
import os
import random
import time
import zlib


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports the tests' daemons listen on lie below the kernel's ephemeral range: a port
# that is free when picked cannot be taken, before the daemon binds it, as the source
# port of an outgoing connection (our daemons bind theirs to their own address, so a
# stopped cluster's connections can hold a later cluster's address and port).
LISTEN_PORTS = (10000, max(10000 + 1000, min(_ephemeral_low(), 65536)) - 1)


def listen_port(rnd=random):
    """A random port in LISTEN_PORTS."""
    return rnd.randint(*LISTEN_PORTS)


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return that value.
    Exceptions raised by pred count as "not yet" (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s (last error: %r)"
                               % (timeout, what, last_exc))
        time.sleep(interval)


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(s):
    return base64.b64decode(s)


def payload(n, seed):
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def snapshot_tree(root):
    """{relative path: size} of every regular file (or symlink) under root.
    Dot files (daemon bookkeeping such as data/.fastdfs_vars) only count by
    name: their size may change on their own."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                out[os.path.relpath(p, root)] = None if f.startswith(".") else os.lstat(p).st_size
            except FileNotFoundError:
                pass
    return out


def pid_alive(pid):
    """Whether a process `pid` exists (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
