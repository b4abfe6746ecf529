"""Driver for PyPI ``fastdfs-client`` 1.3.0 (module fastdfs_client).

This client hard-codes IP_ADDRESS_SIZE = 46, so it only understands tracker
replies of a tracker with ``response_ip_addr_size = IPv6`` (body 70/69 bytes).
File ids are str.

Client defects found by reading its source (not server problems):

* upload_by_file: tcp_send_file_ex raises NotImplementedError("sendfile not
  ready yet").
* append_by_* / modify_by_* / truncate_file: the str remote name from
  split_remote_fileid is packed with struct "%ds" -> struct.error.  The
  client's lower-level StorageClient methods work when given a bytes name,
  so the driver calls those (same packet building code).
* set_meta_data: metadata buffer is a str packed with "%ds" (struct.error)
  and the op flag is a str packed with "c"; op_flag is never forwarded.
* get_meta_data: fdfs_unpack_metadata splits the bytes reply with a str
  separator -> TypeError (the request itself is fine).
* upload_slave_*: ext / prefix / master name are str packed with "%ds".
* list_*: FastDFS 3.x layouts (105 / 612 bytes) vs 6.16's 113 / 517.
* no query-file-info API.
* AsyncDfsClient (anyio) only does upload and delete; supported here as
  upload_buffer_async / delete_async.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# Do not let this directory shadow installed packages (see _drvcommon).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]
import anyio  # noqa: E402
from fastdfs_client import FastdfsClient  # noqa: E402
from fastdfs_client.storage_client import StorageClient  # noqa: E402
from fastdfs_client.tracker_client import TrackerClient  # noqa: E402
sys.path.append(_HERE)

from _drvcommon import as_str, b64d, b64e, run, split_file_id  # noqa: E402

UNSUPPORTED = {
    "upload_by_file": "client bug: tcp_send_file_ex raises NotImplementedError('sendfile not ready yet')",
    "set_meta": "client bug: str metadata packed with struct '%ds' and str op flag with 'c' -> struct.error; op_flag never forwarded",
    "get_meta": "client bug: fdfs_unpack_metadata splits bytes with a str separator -> TypeError",
    "upload_slave": "client bug: str prefix/ext/master name packed with struct '%ds' -> struct.error",
    "file_info": "client has no query-file-info API",
    "list_groups": "client decodes FastDFS 3.x TrackerGroupStat (105 bytes); 6.x sends 113",
    "list_storages": "client decodes FastDFS 3.x storage stat (612 bytes); 6.x sends 517 (IPv6 size)",
}


def client(cmd):
    return FastdfsClient(cmd["client_conf"])


def lowlevel_update(c, file_id):
    group, remote = split_file_id(file_id)
    tc = TrackerClient(c.tracker_pool)
    ss = tc.tracker_query_storage_update(group, remote)
    return tc, ss, StorageClient(ss.ip_addr, ss.port, c.timeout), remote.encode()


def upload_buffer(cmd):
    r = client(cmd).upload_by_buffer(b64d(cmd["data_b64"]), cmd.get("ext") or None)
    return {"file_id": as_str(r["Remote file_id"])}


def upload_buffer_async(cmd):
    c = client(cmd)
    url = anyio.run(c.upload, b64d(cmd["data_b64"]), cmd.get("ext") or "")
    # url = http://<storage ip>/<group>/<remote filename>
    return {"file_id": url.split("://", 1)[1].split("/", 1)[1], "url": url}


def delete_async(cmd):
    anyio.run(client(cmd).delete, cmd["file_id"])
    return {}


def upload_file(cmd):
    r = client(cmd).upload_by_filename(cmd["path"])
    return {"file_id": as_str(r["Remote file_id"])}


def upload_appender_buffer(cmd):
    r = client(cmd).upload_appender_by_buffer(b64d(cmd["data_b64"]), cmd.get("ext") or None)
    return {"file_id": as_str(r["Remote file_id"])}


def upload_appender_file(cmd):
    r = client(cmd).upload_appender_by_filename(cmd["path"])
    return {"file_id": as_str(r["Remote file_id"])}


VIA = "StorageClient lower-level call with bytes name (public API: struct.error on str name)"


def append_buffer(cmd):
    tc, ss, st, remote = lowlevel_update(client(cmd), cmd["file_id"])
    st.storage_append_by_buffer(tc, ss, b64d(cmd["data_b64"]), remote)
    return {"via": VIA}


def append_file(cmd):
    tc, ss, st, remote = lowlevel_update(client(cmd), cmd["file_id"])
    st.storage_append_by_filename(tc, ss, cmd["path"], remote)
    return {"via": VIA}


def modify_buffer(cmd):
    data = b64d(cmd["data_b64"])
    tc, ss, st, remote = lowlevel_update(client(cmd), cmd["file_id"])
    st.storage_modify_by_buffer(tc, ss, data, int(cmd.get("offset", 0)), len(data), remote)
    return {"via": VIA}


def truncate(cmd):
    tc, ss, st, remote = lowlevel_update(client(cmd), cmd["file_id"])
    st.storage_truncate_file(tc, ss, int(cmd["size"]), remote)
    return {"via": VIA}


def download(cmd):
    r = client(cmd).download_to_buffer(cmd["file_id"], int(cmd.get("offset", 0)), int(cmd.get("length", 0)))
    return {"data_b64": b64e(r["Content"]), "via": "public"}


def download_to_file(cmd):
    client(cmd).download_to_file(cmd["path"], cmd["file_id"], int(cmd.get("offset", 0)),
                                 int(cmd.get("length", 0)))
    with open(cmd["path"], "rb") as f:
        return {"data_b64": b64e(f.read())}


def delete(cmd):
    client(cmd).delete_file(cmd["file_id"])
    return {}


HANDLERS = {
    "upload_buffer": upload_buffer,
    "upload_buffer_async": upload_buffer_async,
    "delete_async": delete_async,
    "upload_file": upload_file,
    "upload_appender_buffer": upload_appender_buffer,
    "upload_appender_file": upload_appender_file,
    "append_buffer": append_buffer,
    "append_file": append_file,
    "modify_buffer": modify_buffer,
    "truncate": truncate,
    "download": download,
    "download_to_file": download_to_file,
    "delete": delete,
}

if __name__ == "__main__":
    run(HANDLERS, UNSUPPORTED)
