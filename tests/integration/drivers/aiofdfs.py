"""Driver for PyPI ``aiofdfs`` 0.1.30 (asyncio; needs Python >= 3.12).

Uses 16-byte IP fields (works with ``response_ip_addr_size = auto``).  File ids
are str.  This is the most complete of the PyPI clients (metadata get, file
info, upload with metadata).

Client defects found by reading its source (not server problems):

* append_by_* / modify_by_* / truncate_file / set_meta_data: the str remote
  name from split_remote_fileid is packed with struct "%ds" -> struct.error
  before anything is sent.  Its lower-level Async_Storage_Client methods work
  with a bytes name (that is how upload_by_filename sets metadata itself), so
  the driver calls those.  set_meta_data also never forwards op_flag; the
  lower-level storage_set_metadata does, so merge ('M') is testable.
* download_to_buffer / download_to_file / modify_*: ``if not offset:`` is
  inverted (ranged download -> UnboundLocalError, modify offset forced to 0);
  ranged downloads use Async_Storage_Client.storage_download_to_buffer.
* upload_slave_*: prefix / ext / master name are str packed with "%ds"
  (struct.error); by_buffer passes arguments in the wrong positions.
* list_*: FastDFS 3.x layouts (105 / 612 bytes) vs 6.16's 113 / 487 bytes.
* upload_by_filename always stores metadata OriginFileExtName /
  OriginFileName / OriginFileSize (set on the same storage connection).
"""
import asyncio
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# Do not let this directory shadow installed packages (see _drvcommon).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]
from aiofdfs import Async_Fdfs_Client, Async_Tracker_Client, FastDfsConf  # noqa: E402
from aiofdfs.async_storage_client import Async_Storage_Client  # noqa: E402
sys.path.append(_HERE)

from _drvcommon import b64d, b64e, run, split_file_id  # noqa: E402

UNSUPPORTED = {
    "upload_slave": "client bug: str prefix/ext/master name packed with struct '%ds' -> struct.error",
    "list_groups": "client decodes FastDFS 3.x TrackerGroupStat (105 bytes); 6.x sends 113",
    "list_storages": "client decodes FastDFS 3.x storage stat (612 bytes); 6.x sends 487",
}

LOWLEVEL = "Async_Storage_Client lower-level call with bytes name (public API: struct.error on str name)"


def conf(cmd):
    t = int(cmd.get("timeout", 10))
    return FastDfsConf([cmd["tracker"]], connect_timeout=t, network_timeout=t)


async def with_client(cmd, fn):
    async with Async_Fdfs_Client(conf(cmd)) as c:
        return await fn(c)


async def lowlevel(c, cmd, fn, fetch=False):
    """Resolve the storage through the tracker like the public API does, then
    run fn(tracker_client, storage_server, storage_client, remote_str)."""
    group, remote = split_file_id(cmd["file_id"])
    tc = Async_Tracker_Client(c.tracker_pool, -1)
    if fetch:
        ss = await tc.tracker_query_storage_fetch(group, remote)
    else:
        ss = await tc.tracker_query_storage_update(group, remote)
    t = int(cmd.get("timeout", 10))
    async with Async_Storage_Client(ss.ip_addr, ss.port, t, t) as st:
        return await fn(tc, ss, st, remote)


def sync(coro_fn):
    def handler(cmd):
        return asyncio.run(with_client(cmd, lambda c: coro_fn(c, cmd)))
    return handler


@sync
async def upload_buffer(c, cmd):
    r = await c.upload_by_buffer(b64d(cmd["data_b64"]), cmd.get("ext") or None, cmd.get("meta") or None)
    return {"file_id": r["file_id"]}


@sync
async def upload_file(c, cmd):
    # upload_by_filename: also stores Origin* metadata (+ cmd["meta"])
    r = await c.upload_by_filename(cmd["path"], dict(cmd.get("meta") or {}))
    return {"file_id": r["file_id"]}


@sync
async def upload_by_file(c, cmd):
    r = await c.upload_by_file(cmd["path"])
    return {"file_id": r["file_id"]}


@sync
async def upload_appender_buffer(c, cmd):
    r = await c.upload_appender_by_buffer(b64d(cmd["data_b64"]), cmd.get("ext") or None)
    return {"file_id": r["file_id"]}


@sync
async def upload_appender_file(c, cmd):
    r = await c.upload_appender_by_filename(cmd["path"])
    return {"file_id": r["file_id"]}


@sync
async def append_buffer(c, cmd):
    data = b64d(cmd["data_b64"])
    await lowlevel(c, cmd, lambda tc, ss, st, r: st.storage_append_by_buffer(tc, ss, data, r.encode()))
    return {"via": LOWLEVEL}


@sync
async def append_file(c, cmd):
    await lowlevel(c, cmd, lambda tc, ss, st, r: st.storage_append_by_filename(tc, ss, cmd["path"], r.encode()))
    return {"via": LOWLEVEL}


@sync
async def modify_buffer(c, cmd):
    data, off = b64d(cmd["data_b64"]), int(cmd.get("offset", 0))
    await lowlevel(c, cmd, lambda tc, ss, st, r: st.storage_modify_by_buffer(tc, ss, data, off, len(data),
                                                                             r.encode()))
    return {"via": LOWLEVEL}


@sync
async def truncate(c, cmd):
    size = int(cmd["size"])
    await lowlevel(c, cmd, lambda tc, ss, st, r: st.storage_truncate_file(tc, ss, size, r.encode()))
    return {"via": LOWLEVEL}


@sync
async def download(c, cmd):
    off, length = int(cmd.get("offset", 0)), int(cmd.get("length", 0))
    if off == 0 and length == 0:
        r = await c.download_to_buffer(cmd["file_id"])
        return {"data_b64": b64e(r["content"]), "via": "public"}
    r = await lowlevel(c, cmd, lambda tc, ss, st, rn: st.storage_download_to_buffer(ss, None, off, length, rn),
                       fetch=True)
    return {"data_b64": b64e(r["content"]),
            "via": "Async_Storage_Client.storage_download_to_buffer (public API breaks on offset/length)"}


@sync
async def download_to_file(c, cmd):
    if int(cmd.get("offset", 0)) or int(cmd.get("length", 0)):
        return {"skipped": "public download_to_file cannot do ranges (UnboundLocalError)"}
    await c.download_to_file(cmd["path"], cmd["file_id"])
    with open(cmd["path"], "rb") as f:
        return {"data_b64": b64e(f.read())}


@sync
async def download_stream(c, cmd):
    chunks = []
    async for b in c.download_to_generator(cmd["file_id"]):
        chunks.append(b)
    return {"data_b64": b64e(b"".join(chunks))}


@sync
async def set_meta(c, cmd):
    meta, op = cmd["meta"], cmd.get("flag", "O")
    status = await lowlevel(c, cmd, lambda tc, ss, st, r: st.storage_set_metadata(ss, r.encode(), meta, op))
    if status != 0:
        raise RuntimeError("set metadata failed: status %d (%s)" % (status, os.strerror(status)))
    return {"via": LOWLEVEL}


@sync
async def get_meta(c, cmd):
    # NB: the client maps status 2 (no metadata) to {}.
    return {"meta": await c.get_meta_data(cmd["file_id"])}


@sync
async def file_info(c, cmd):
    r = await c.query_file_info(cmd["file_id"])
    return {"size": r["file_size"], "create_timestamp": r["create_timestamp"],
            "crc32": r["crc32"], "source_ip": r["source_ip"]}


@sync
async def delete(c, cmd):
    await c.delete_file(cmd["file_id"])
    return {}


HANDLERS = {
    "upload_buffer": upload_buffer,
    "upload_file": upload_file,
    "upload_by_file": upload_by_file,
    "upload_appender_buffer": upload_appender_buffer,
    "upload_appender_file": upload_appender_file,
    "append_buffer": append_buffer,
    "append_file": append_file,
    "modify_buffer": modify_buffer,
    "truncate": truncate,
    "download": download,
    "download_to_file": download_to_file,
    "download_stream": download_stream,
    "set_meta": set_meta,
    "get_meta": get_meta,
    "file_info": file_info,
    "delete": delete,
}

if __name__ == "__main__":
    run(HANDLERS, UNSUPPORTED)
