"""Shared plumbing for the client drivers (stdlib only: runs in every client venv).

A driver is executed as ``<venv>/bin/python drivers/<client>.py`` with one JSON
command on argv[1] (or on stdin when argv[1] is absent).  It prints exactly one
result line prefixed with ``RESULT_MARKER`` so that anything a client library
prints on stdout by itself cannot be mistaken for the result.

Result shapes:
  {"ok": true, ...op specific fields...}
  {"ok": false, "error": "<ExcType>: <message>", "traceback": "..."}
  {"ok": false, "unsupported": "<why this client cannot do this op>"}

Common command fields: "op", "tracker" ("ip:port"), "client_conf" (path),
"timeout" (seconds).  Bytes travel base64 encoded ("data_b64").
"""

import base64
import json
import os
import sys
import traceback

RESULT_MARKER = "@@FDFS_DRIVER_RESULT@@ "


def strip_own_dir_from_sys_path(file):
    """The drivers are named after the package they drive (aiofdfs.py,
    fastdfs_client.py, ...); Python puts the script's directory first on
    sys.path, which would make ``import aiofdfs`` import the driver itself."""
    here = os.path.dirname(os.path.abspath(file))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
    return here


def b64d(s):
    return base64.b64decode(s.encode("ascii")) if s else b""


def b64e(b):
    return base64.b64encode(bytes(b)).decode("ascii")


def as_str(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return v


def split_file_id(file_id):
    group, _, remote = file_id.partition("/")
    return group, remote


def tracker_host_port(cmd):
    host, _, port = cmd["tracker"].rpartition(":")
    return host, int(port)


def emit(result):
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def run(handlers, unsupported):
    """handlers: op -> callable(cmd) returning a dict.
    unsupported: op -> reason (the client cannot do it; the op is not attempted
    because trying would crash or hang the client, see the driver comments)."""
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    cmd = json.loads(raw)
    op = cmd.get("op")
    if op == "capabilities":
        emit({"ok": True, "supported": sorted(handlers), "unsupported": unsupported})
        return
    if op in unsupported:
        emit({"ok": False, "unsupported": unsupported[op]})
        return
    if op not in handlers:
        emit({"ok": False, "unsupported": "driver has no op %r" % op})
        return
    try:
        res = handlers[op](cmd) or {}
        res["ok"] = True
        emit(res)
    except BaseException as e:  # noqa: BLE001 - report everything to the test
        emit({"ok": False, "error": "%s: %s" % (type(e).__name__, e),
              "traceback": traceback.format_exc()})
