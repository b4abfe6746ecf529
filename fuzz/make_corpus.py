#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the byte vectors of fdfs-proto's
tests and the captured exchanges of the protocol reference. Deterministic: rerunning it
rewrites the same files. Usage: python3 fuzz/make_corpus.py"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NAME = b"M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt"
SLAVE = b"M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702_big.txt"
APPENDER = b"M00/00/00/fwAAPWsEx4eEapi7AAAAAAL5vO4141.txt"
META = b"ext_name\x02jpg\x01width\x02160\x01height\x0280\x01file_size\x02115120"


def i64(v):
    return struct.pack(">q", v)


def i32(v):
    return struct.pack(">i", v)


def u32(v):
    return struct.pack(">I", v)


def fixed(s, width):
    s = s if isinstance(s, bytes) else s.encode()
    return s[:width].ljust(width, b"\0")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def addr(ip, port, width):
    return fixed(ip, width - 1) + i64(port)


def brief(status, port, sid, ip):
    return bytes([status]) + u32(port) + fixed(sid, 16) + fixed(ip, 46)


def counters():
    return u32(4) + u32(3) + u32(5) + b"".join(i64(i) for i in range(38)) + i64(1) * 4


def storage_stat(width):
    return (bytes([7, 0]) + fixed("127.0.0.61", 16) + fixed("127.0.0.61", width)
            + fixed("", 16) + fixed("6.16.1", 8)
            + b"".join(i64(v) for v in [1795475000, 1795475100, 100, 50, 10, 10, 1, 256, 0, 23400])
            + counters() + b"\0")


def tracker_msgs():
    t = {}
    t[0] = [bytes.fromhex("67726f757031000000000000000000003132372e302e302e36310000000000"
                          "0000000000005b6800"),
            fixed("group1", 16) + addr("127.0.0.61", 23400, 46) + b"\0"]
    t[1] = [fixed("group1", 16) + addr("127.0.0.61", 23400, 16) * 2 + b"\x01"]
    t[2] = [fixed("group1", 16) + addr("::1", 23400, 46) + b"\0"]
    t[3] = [fixed("group1", 16) + NAME]
    t[4] = [fixed("group1", 16) + addr("127.0.0.61", 23400, 16)]
    t[5] = [fixed("group1", 16) + addr("127.0.0.61", 23400, 16) + addr("127.0.0.62", 23400, 16)]
    t[6] = [fixed("group1", 16) + addr("127.0.0.61", 23400, 46)]
    t[7] = [fixed("group1", 17) + b"".join(i64(v) for v in [100, 50, 10, 0, 2, 23000, 2, 2, 0, 1, 256, -1])]
    t[8] = [storage_stat(16), storage_stat(46)]
    t[9] = [fixed("group1", 16) + b"127.0.0.61", fixed("group1", 16)]
    t[10] = [fixed("group1", 17) + i64(23400) + i64(1) + i64(256) + i64(10) + i64(1795475000)
             + i64(1795475100) + fixed("6.16.1", 8) + b"\0\0" + fixed("", 16)
             + fixed("127.0.0.61", 46) + i64(1) + b"127.0.0.60:22422\n"]
    t[11] = [b"\x06" + fixed("127.0.0.62", 16)]
    t[12] = [b"\x05" + brief(0, 22422, "127.0.0.60", "127.0.0.60") + brief(7, 23400, "127.0.0.61", "127.0.0.61"),
             b"\x02" + brief(0, 23400, "127.0.0.61", "127.0.0.61"), b""]
    t[13] = [i64(100) + i64(50) + i64(200) + i64(10)]
    t[14] = [fixed("127.0.0.62", 16) + i32(1795475304)]
    t[15] = [fixed("127.0.0.61", 16) + i64(5), b""]
    t[16] = [fixed("group1", 17) + u32(23000), fixed("group1", 16)]
    t[17] = [bytes([1, 0, 0, 0, 0, 0, 0, 0x02, 0x58, 0, 0, 0, 0, 0, 0, 0x01, 0x2c])]
    t[18] = [i64(0x0102) + fixed("6.16.1", 8) + i64(22122)]
    t[19] = [bytes([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 3, 0]), b""]
    t[20] = [fixed("group1", 16) + fixed("100001", 16)]
    t[21] = [bytes([1, 0, 0, 0, 0, 0, 0, 0x20, 0])]
    t[22] = [i64(3) + b"abc"]
    t[23] = [bytes([2, 0, 0])]
    t[24] = [b"\x01" + fixed("127.0.0.60:22422", 52) + b"\x01\x01" + u32(4) + u32(3) + u32(5)
             + fixed("6.16.1", 8) + i64(1795475304) + i64(1795475305), b"\0"]
    t[25] = [fixed("group1", 16) + b"rest"]
    t[26] = [counters()]
    t[27] = [brief(7, 23400, "127.0.0.61", "127.0.0.61")]
    for sel, bodies in t.items():
        for n, body in enumerate(bodies):
            write("tracker_msgs", f"{sel:02d}-{n}", bytes([sel]) + body)


def storage_msgs():
    t = {}
    t[0] = [bytes([0, 0, 0, 0, 0, 0, 0, 0, 0x0f]) + b"txt\0\0\0"]
    t[1] = [fixed("group1", 16) + NAME]
    t[2] = [i64(len(NAME)) + i64(15) + fixed("_big", 16) + fixed("txt", 6)]
    t[3] = [fixed("group1", 16) + NAME]
    t[4] = [i64(len(NAME)) + i64(len(META)) + b"O" + fixed("group1", 16) + NAME + META]
    t[5] = [i64(3) + i64(0) + fixed("group1", 16) + NAME]
    t[6] = [i64(15) + bytes([0, 0, 0, 0, 0x6b, 0x04, 0xc7, 0x7f, 0, 0, 0, 0, 0x02, 0xf9, 0xbc, 0xee])
            + fixed("127.0.0.61", 16)]
    t[7] = [i64(44) + i64(8)]
    t[8] = [i64(44) + i64(22) + i64(15)]
    t[9] = [i64(44) + i64(7) + APPENDER]
    t[10] = [APPENDER]
    t[11] = [fixed("127.0.0.61", 16)]
    t[12] = [i64(44) + i64(15) + bytes([0x6b, 0x04, 0xc7, 0x68]) + fixed("group1", 16)]
    t[13] = [i64(44) + i64(7) + i64(8) + i32(1795475354) + fixed("group1", 16)]
    t[14] = [i32(1795475344) + fixed("group1", 16) + SLAVE]
    t[15] = [i64(44) + i64(15) + i64(7) + i32(9) + fixed("group1", 16) + NAME]
    t[16] = [i64(44) + i64(44) + i32(1795475339) + fixed("group1", 16)
             + b"M00/00/00/fwAAPWsEx4uAEgtOAAAAHpBT5lw141.txt" + APPENDER]
    t[17] = [fixed("group1", 16) + SLAVE]
    for sel, bodies in t.items():
        for n, body in enumerate(bodies):
            write("storage_msgs", f"{sel:02d}-{n}", bytes([sel]) + body)


def file_ids():
    names = {
        "normal": NAME,
        "slave": SLAVE,
        "appender": APPENDER,
        "id-twin": b"M00/00/00/oYYBAGsEx2iADTARAAAADwL5vO4236.txt",
        "file-id": b"group1/" + NAME,
        "traversal": b"group1/M00/00/00/../../../../etc/passwd",
        "packed": b"fwAAPWsEx2iADTARAAAADwL5vO4",
        "local-name": b"/tmp/photo.jpeg",
    }
    for k, v in names.items():
        write("file_id", k, v)


def http():
    write("http_url", "with-group", b"\x00/group1/" + NAME + b"?filename=a%20b+c.txt&token=0d0b6c40ab21968ee0f077414c1da269&ts=1795475304")
    write("http_url", "no-group", b"\x01/" + NAME + b"?start=10&end=20")
    write("http_url", "store-path-1", b"\x00/group1/M01/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt?redirect=1")
    write("http_url", "utf8-filename", b"\x00/group2/" + SLAVE + b"?filename=r%C3%A9sum%C3%A9%22.txt")
    write("http_url", "peers", b"\x07/group1/" + NAME + b"?127.0.0.61,127.0.0.62,,127.0.0.63")
    write("http_range", "flv", i64(100) + b"10\n20\nbytes=0-1, 4-5,-3")
    write("http_range", "flv-open", i64(1 << 40) + b"0\n\nBYTES=0-")
    write("token", "reference", i64(0) + i64(1795475304) + i64(600) + NAME + b"\0FastDFS1234567890\0"
          + b"0d0b6c40ab21968ee0f077414c1da269\0 1795475304")
    write("token", "raw-ts", i64(1795475304) + i64(1795475904) + i64(600) + NAME + b"\0s\0" + b"x" * 32)
    write("header", "query-store", bytes([0, 0, 0, 0, 0, 0, 0, 0, 0x65, 0]) + i64(1 << 18))
    write("header", "reply-40", bytes([0, 0, 0, 0, 0, 0, 0, 0x28, 0x64, 0]) + i64(40))
    write("header", "negative", b"\xff" * 10 + i64(1 << 20))
    write("metadata", "captured", META)
    write("metadata", "merge", b"\x0ba\x021\x01b\x022b\x023\x01c\x024\x01noval\x01\x02empty-name")


def configs():
    tracker = (b"# is this config file disabled\ndisabled = false\nbind_addr =\nport = 22122\n"
               b"network_timeout = 60\nbase_path = /home/yuqing/fastdfs\nmax_buff_size = 128KB\n"
               b"reserved_storage_space = 20%\nlog_level = info\ntrunk_file_size = 64MB\n"
               b"trunk_create_file_time_base = 02:00\nresponse_ip_addr_size = auto\n"
               b"allow_hosts = 10.0.1.[1-15]\nallow_hosts = host[01-08,20-25].domain.com\n"
               b"http.server_port = 8080\n")
    write("config", "tracker", tracker)
    write("config", "sections-include", b"a = 1\n[group1]\nstore_path0 = x\n[ group2 ]\nk=v=w\n"
          b"#include http.conf\nafter = yes\n#include\n[]\nsize = 1 T\nratio = 10.5%\n")
    write("config", "bad-line", b"key = value\nnot a pair\n")
    mod = (b"connect_timeout = 2\nnetwork_timeout = 30\nbase_path = /tmp\n"
           b"tracker_server = 127.0.0.11:22122\ntracker_server = 127.0.0.12:22122\n"
           b"storage_server_port = 23000\ngroup_name = group1\nurl_have_group_name = true\n"
           b"store_path_count = 2\nstore_path0 = @STORE@/s0\nstore_path1 = @STORE@/s1/\n"
           b"log_level = info\nresponse_mode = proxy\nif_alias_prefix = a, b\nflv_support = true\n"
           b"flv_extension = flv\ngroup_count = 0\n"
           b"http.anti_steal.check_token = true\nhttp.anti_steal.secret_key = FastDFS1234567890\n"
           b"http.anti_steal.token_ttl = 900\n#include http.conf\n")
    write("modconf", "single-group", mod)
    write("modconf", "multi-group", b"group_count = 2\nurl_have_group_name = true\n"
          b"[group1]\ngroup_name = group1\nstore_path0 = @STORE@/s0\nstorage_server_port = 23000\n"
          b"[group2]\ngroup_name = group2\nstore_path_count = 1\nstore_path0 = @STORE@/s1\n")
    write("modconf", "mime-types", b"group_name = g1\nstore_path0 = @STORE@/s0\n"
          b"types {\n    text/html  html htm shtml;\n    image/jpeg jpeg jpg;\n}\n")
    # The repo's own sample, as shipped (its store path does not exist here).
    with open(os.path.join(ROOT, "nginx-conf", "mod_fastdfs.conf"), "rb") as f:
        sample = b"\n".join(l for l in f.read().split(b"\n") if l.strip() and not l.startswith(b"#"))
    write("modconf", "repo-sample", sample + b"\n")
    write("config", "repo-mod-sample", sample + b"\n")


if __name__ == "__main__":
    tracker_msgs()
    storage_msgs()
    file_ids()
    http()
    configs()
