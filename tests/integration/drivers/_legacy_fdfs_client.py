"""Driver body shared by the two PyPI packages that install the module
``fdfs_client`` (py3fdfs 2.2.0 and fdfs-client-py3 1.0.0).

Both are ports of the same "FastDFS 3.08" Python client and share the same
storage/tracker code; they differ only in the Fdfs_client constructor
(py3fdfs: a tracker dict, fdfs-client-py3: a client.conf path) and in
fdfs-client-py3 returning str ids from uploads.  Both want file ids as
*bytes* on input (utils.split_remote_fileid does ``find(b'/')``).

Client defects found by reading their source (not server problems):

* upload_by_file / upload_appender_by_file / *_slave_by_file: call
  ``tcp_send_file_ex`` whose sendfile() call is commented out: the loop
  ``while 1: try: pass`` never ends and sends nothing -> hangs forever.
* download_to_buffer / download_to_file: ``if not offset: file_offset = ...``
  is inverted, so any non-zero offset or length raises UnboundLocalError.
  We use the client's own lower-level Storage_client call (same packet
  building code) for ranged downloads.
* modify_by_buffer: ``if not offset: file_offset = int(offset) else: 0`` ->
  the offset is always 0.  Non-zero offsets use Storage_client directly.
* set_meta_data: packs op flag 'O' (a str) with struct "c" and the metadata
  (a str from fdfs_pack_metadata) with "%ds" -> struct.error before anything
  is sent; it also never passes op_flag on (no merge).
* get_meta_data: calls ``remote_file_name.encode()`` on the bytes id
  (AttributeError) and fdfs_unpack_metadata splits bytes with a str
  separator (TypeError).
* upload_slave_*: the ext name is packed as str with "%ds" (struct.error);
  upload_slave_by_buffer even passes master name / prefix in the wrong
  argument positions (sends a non-slave body with cmd 21).
* list_all_groups / list_one_group / list_servers: decode the FastDFS 3.x
  layouts (TrackerGroupStat 105 bytes, storage stat 612 bytes); 6.16 sends
  113 / 487 bytes -> ResponseError or struct.error.
* no query-file-info API.
"""

import os

from _drvcommon import b64d, b64e, as_str, split_file_id

from fdfs_client.client import Fdfs_client, get_tracker_conf  # noqa: E402
from fdfs_client.tracker_client import Tracker_client  # noqa: E402
from fdfs_client.storage_client import Storage_client  # noqa: E402

UNSUPPORTED = {
    "upload_by_file": "client bug: tcp_send_file_ex() has its sendfile call commented out and loops forever",
    "set_meta": "client bug: struct.pack('c', 'O') with a str op flag and str metadata buffer -> struct.error; op_flag never forwarded",
    "get_meta": "client bug: bytes remote name .encode() -> AttributeError; unpack splits bytes by str separator",
    "upload_slave": "client bug: slave ext/prefix packed as str with '%ds' -> struct.error (by_buffer passes args in wrong positions)",
    "file_info": "client has no query-file-info API",
    "list_groups": "client decodes FastDFS 3.x TrackerGroupStat (105 bytes); 6.x sends 113",
    "list_storages": "client decodes FastDFS 3.x storage stat (612 bytes); 6.x sends 487",
}


def make_handlers(ctor_style):
    def client(cmd):
        if ctor_style == "dict":
            return Fdfs_client(get_tracker_conf(cmd["client_conf"]))
        return Fdfs_client(cmd["client_conf"])

    def fid_bytes(cmd, key="file_id"):
        return cmd[key].encode()

    def lowlevel_update(c, file_id):
        group, remote = split_file_id(file_id)
        tc = Tracker_client(c.tracker_pool)
        ss = tc.tracker_query_storage_update(group.encode(), remote.encode())
        return tc, ss, Storage_client(ss.ip_addr, ss.port, c.timeout), remote.encode()

    def lowlevel_fetch(c, file_id):
        group, remote = split_file_id(file_id)
        tc = Tracker_client(c.tracker_pool)
        ss = tc.tracker_query_storage_fetch(group.encode(), remote.encode())
        return tc, ss, Storage_client(ss.ip_addr, ss.port, c.timeout), remote.encode()

    def upload_buffer(cmd):
        r = client(cmd).upload_by_buffer(b64d(cmd["data_b64"]), file_ext_name=cmd.get("ext") or None)
        return {"file_id": as_str(r["Remote file_id"])}

    def upload_file(cmd):
        r = client(cmd).upload_by_filename(cmd["path"])
        return {"file_id": as_str(r["Remote file_id"])}

    def upload_appender_buffer(cmd):
        r = client(cmd).upload_appender_by_buffer(b64d(cmd["data_b64"]), file_ext_name=cmd.get("ext") or None)
        return {"file_id": as_str(r["Remote file_id"])}

    def upload_appender_file(cmd):
        r = client(cmd).upload_appender_by_filename(cmd["path"])
        return {"file_id": as_str(r["Remote file_id"])}

    def append_buffer(cmd):
        client(cmd).append_by_buffer(b64d(cmd["data_b64"]), fid_bytes(cmd))
        return {}

    def append_file(cmd):
        client(cmd).append_by_filename(cmd["path"], fid_bytes(cmd))
        return {}

    def modify_buffer(cmd):
        data, offset = b64d(cmd["data_b64"]), int(cmd.get("offset", 0))
        c = client(cmd)
        if offset == 0:
            c.modify_by_buffer(data, fid_bytes(cmd), 0)
            return {"via": "public"}
        tc, ss, st, remote = lowlevel_update(c, cmd["file_id"])
        st.storage_modify_by_buffer(tc, ss, data, offset, len(data), remote)
        return {"via": "Storage_client.storage_modify_by_buffer (public API ignores offset)"}

    def truncate(cmd):
        client(cmd).truncate_file(int(cmd["size"]), fid_bytes(cmd))
        return {}

    def download(cmd):
        offset, length = int(cmd.get("offset", 0)), int(cmd.get("length", 0))
        c = client(cmd)
        if offset == 0 and length == 0:
            r = c.download_to_buffer(fid_bytes(cmd))
            return {"data_b64": b64e(r["Content"]), "via": "public"}
        tc, ss, st, remote = lowlevel_fetch(c, cmd["file_id"])
        r = st.storage_download_to_buffer(tc, ss, None, offset, length, remote)
        return {"data_b64": b64e(r["Content"]),
                "via": "Storage_client.storage_download_to_buffer (public API breaks on offset/length)"}

    def download_to_file(cmd):
        if int(cmd.get("offset", 0)) or int(cmd.get("length", 0)):
            return {"skipped": "public download_to_file cannot do ranges (UnboundLocalError)"}
        client(cmd).download_to_file(cmd["path"], fid_bytes(cmd))
        with open(cmd["path"], "rb") as f:
            return {"data_b64": b64e(f.read())}

    def delete(cmd):
        client(cmd).delete_file(fid_bytes(cmd))
        return {}

    return {
        "upload_buffer": upload_buffer,
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
