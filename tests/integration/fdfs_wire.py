"""Minimal FastDFS 6.16 wire helpers for the tests (raw sockets, written from
the protocol reference, no client library).

Header: i64 BE pkg_len (body only) | u8 cmd | u8 status.  Responses: cmd 100,
status = errno, empty body on error.
"""

import base64
import socket
import struct
import time

HEADER = struct.Struct(">qBB")
RESP = 100

# tracker
T_LIST_ONE_GROUP = 90
T_LIST_ALL_GROUPS = 91
T_LIST_STORAGE = 92
T_QUERY_STORE_WITHOUT_GROUP_ONE = 101
T_QUERY_FETCH_ONE = 102
T_QUERY_UPDATE = 103
T_QUERY_STORE_WITH_GROUP_ONE = 104
T_QUERY_FETCH_ALL = 105
T_STORAGE_BEAT = 83
ACTIVE_TEST = 111
QUIT = 82

# storage
S_UPLOAD = 11
S_DELETE = 12
S_SET_META = 13
S_DOWNLOAD = 14
S_GET_META = 15
S_UPLOAD_SLAVE = 21
S_QUERY_FILE_INFO = 22
S_UPLOAD_APPENDER = 23
S_APPEND = 24
S_MODIFY = 34
S_TRUNCATE = 36
S_REGENERATE = 38

EINVAL = 22
ENOENT = 2

GROUP_LEN = 16


def header(pkg_len, cmd, status=0):
    return HEADER.pack(pkg_len, cmd, status)


def group_field(name):
    b = name.encode() if isinstance(name, str) else name
    return b[:GROUP_LEN].ljust(GROUP_LEN, b"\0")


class ProtoError(Exception):
    pass


class Conn:
    """One TCP connection with exact-size reads and a per-call deadline."""

    def __init__(self, addr, timeout=10.0):
        self.addr = addr
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ProtoError("connection closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def recv_header(self):
        """-> (pkg_len, cmd, status)"""
        return HEADER.unpack(self.recv_exact(HEADER.size))

    def request(self, cmd, body=b"", status=0):
        """Send one request, read the response -> (status, body)."""
        self.send(header(len(body), cmd, status) + body)
        return self.response()

    def response(self):
        pkg_len, cmd, status = self.recv_header()
        if cmd != RESP:
            raise ProtoError("response cmd %d != 100" % cmd)
        if pkg_len < 0:
            raise ProtoError("negative response pkg_len %d" % pkg_len)
        if status != 0:
            if pkg_len != 0:
                raise ProtoError("error status %d with non-empty body (%d bytes)" % (status, pkg_len))
            return status, b""
        return status, self.recv_exact(pkg_len)

    def read_until_closed(self, timeout=10.0):
        """Read whatever arrives until the peer closes.  Returns
        (data, closed) where closed is False when the deadline passed first."""
        data = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(data), False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return bytes(data), False
            except (ConnectionResetError, BrokenPipeError):
                return bytes(data), True
            if not chunk:
                return bytes(data), True
            data += chunk


# ---------------------------------------------------------------- tracker ops

def parse_store_reply(body):
    """101/104 reply (40 or 70 bytes) -> dict(group, ip, port, spi)."""
    if len(body) not in (40, 70):
        raise ProtoError("store query body length %d not in (40, 70)" % len(body))
    ipw = len(body) - 16 - 8 - 1
    group = body[:16].rstrip(b"\0").decode()
    ip = body[16:16 + ipw].rstrip(b"\0").decode()
    port, = struct.unpack(">q", body[16 + ipw:16 + ipw + 8])
    return {"group": group, "ip": ip, "port": port, "spi": body[-1]}


def parse_fetch_reply(body):
    """102/103 reply (39 or 69 bytes) -> dict(group, ip, port)."""
    if len(body) not in (39, 69):
        raise ProtoError("fetch query body length %d not in (39, 69)" % len(body))
    ipw = len(body) - 16 - 8
    return {"group": body[:16].rstrip(b"\0").decode(),
            "ip": body[16:16 + ipw].rstrip(b"\0").decode(),
            "port": struct.unpack(">q", body[16 + ipw:])[0]}


def query_store(tracker_addr, timeout=5.0):
    with Conn(tracker_addr, timeout) as c:
        st, body = c.request(T_QUERY_STORE_WITHOUT_GROUP_ONE)
    return st, (parse_store_reply(body) if st == 0 else None)


def query_fetch(tracker_addr, group, remote, cmd=T_QUERY_FETCH_ONE, timeout=5.0):
    with Conn(tracker_addr, timeout) as c:
        st, body = c.request(cmd, group_field(group) + remote.encode())
    return st, (parse_fetch_reply(body) if st == 0 else None)


# ---------------------------------------------------------------- storage ops

def upload_body(data, ext="", spi=0xFF):
    return struct.pack(">BQ", spi, len(data)) + ext.encode().ljust(6, b"\0")[:6] + data


def upload(storage_addr, data, ext="", spi=0xFF, cmd=S_UPLOAD, timeout=10.0):
    """-> (status, file_id or None)"""
    with Conn(storage_addr, timeout) as c:
        st, body = c.request(cmd, upload_body(data, ext, spi))
    if st != 0:
        return st, None
    return st, body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()


def download_body(group, remote, offset=0, count=0):
    r = remote.encode() if isinstance(remote, str) else remote
    return struct.pack(">QQ", offset, count) + group_field(group) + r


def download(storage_addr, file_id, offset=0, count=0, timeout=10.0):
    group, _, remote = file_id.partition("/")
    with Conn(storage_addr, timeout) as c:
        return c.request(S_DOWNLOAD, download_body(group, remote, offset, count))


def download_each(storage_addr, file_ids, timeout=10.0, keep=None):
    """Downloads every file id from one storage on one connection (made again after an
    error) -> {file id: (status, bytes) or ("error", repr)}; with keep(file id, status,
    bytes), what it returns is kept instead of (status, bytes)."""
    out = {}
    conn = None
    try:
        for fid in file_ids:
            group, _, remote = fid.partition("/")
            try:
                if conn is None:
                    conn = Conn(storage_addr, timeout)
                st, body = conn.request(S_DOWNLOAD, download_body(group, remote))
                out[fid] = keep(fid, st, body) if keep else (st, body)
            except (OSError, ProtoError) as e:
                out[fid] = ("error", repr(e))
                if conn is not None:
                    conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return out


def delete(storage_addr, file_id, timeout=10.0):
    group, _, remote = file_id.partition("/")
    with Conn(storage_addr, timeout) as c:
        st, _ = c.request(S_DELETE, group_field(group) + remote.encode())
    return st


def set_meta(storage_addr, file_id, meta, flag=b"O", timeout=10.0):
    group, _, remote = file_id.partition("/")
    packed = b"\x01".join(k.encode() + b"\x02" + v.encode() for k, v in meta.items())
    r = remote.encode()
    body = struct.pack(">QQ", len(r), len(packed)) + flag + group_field(group) + r + packed
    with Conn(storage_addr, timeout) as c:
        st, _ = c.request(S_SET_META, body)
    return st


def get_meta(storage_addr, file_id, timeout=10.0):
    group, _, remote = file_id.partition("/")
    with Conn(storage_addr, timeout) as c:
        st, body = c.request(S_GET_META, group_field(group) + remote.encode())
    if st != 0:
        return st, None
    meta = {}
    if body:
        for rec in body.split(b"\x01"):
            k, _, v = rec.partition(b"\x02")
            meta[k.decode()] = v.decode()
    return st, meta


def query_file_info(storage_addr, file_id, flags=0, timeout=10.0):
    group, _, remote = file_id.partition("/")
    with Conn(storage_addr, timeout) as c:
        st, body = c.request(S_QUERY_FILE_INFO, group_field(group) + remote.encode(), status=flags)
    if st != 0:
        return st, None
    if len(body) not in (40, 70):
        raise ProtoError("file info body length %d not in (40, 70)" % len(body))
    size, ts, crc = struct.unpack(">qqq", body[:24])
    return st, {"size": size, "timestamp": ts, "crc32": crc & 0xFFFFFFFF,
                "source_ip": body[24:].rstrip(b"\0").decode()}


# ---------------------------------------------------------------- file ids

T_GET_LEADER = 95


def leader_of(addr, timeout=3):
    """95 GET_LEADER on the tracker at `addr`: the `ip:port` it names as leader, or None
    (no leader, tracker unreachable or answering nonsense)."""
    try:
        with Conn(addr, timeout) as c:
            st, body = c.request(T_GET_LEADER)
    except (OSError, ProtoError):
        return None
    return body.decode() if st == 0 and body else None


def decode_file_id(file_id):
    """Decode the 27 base64 chars of a file id (reference §4.4)."""
    _, _, remote = file_id.partition("/")
    b64 = remote[10:37].replace("-", "+").replace("_", "/") + "="
    raw = base64.b64decode(b64)
    if len(raw) != 20:
        raise ValueError("bad file id %r" % file_id)
    src = raw[0:4]
    ts, = struct.unpack(">I", raw[4:8])
    size_field, = struct.unpack(">Q", raw[8:16])
    crc, = struct.unpack(">I", raw[16:20])
    appender = bool(size_field & (1 << 58))
    trunk = bool(size_field & (1 << 59))
    if size_field & (1 << 63) or trunk:
        size = size_field & 0xFFFFFFFF
    else:
        size = size_field
    return {"source_ip": ".".join(str(b) for b in src), "timestamp": ts, "size": size,
            "crc32": crc, "appender": appender, "trunk": trunk,
            "remote_len": len(remote)}
