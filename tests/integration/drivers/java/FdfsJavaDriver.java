/*
 * Drives the official FastDFS Java SDK (org.csource.fastdfs, 1.39) against a running
 * cluster, for tests/integration/test_java_sdk.py.
 *
 *   java -cp <sdk classes>:<this class> FdfsJavaDriver <client.properties> <work dir> <scenario>
 *
 * The SDK is initialised from the properties file (connection pool ON) and ONE
 * StorageClient1 is used for every step of the scenario, so every call goes through the
 * SDK's static connection pool: a connection the server left in a bad state is handed to
 * a later call.
 *
 * Output: one line per step, "@@FDFS_JAVA_STEP@@ " + JSON object
 *   {"step": name, "ok": bool, "errno": int, "error": text|null, ...details}
 * and "@@FDFS_JAVA_DONE@@" at the very end. A step that throws is reported with ok=false
 * and the exception; the scenario goes on (later steps show whether the pool recovered).
 *
 * Scenarios: basic, and the error scenarios listed in ERROR_SCENARIOS: each warms the
 * pool, provokes one error reply from the storage, then runs more calls on the same pool.
 */

import org.csource.common.MyException;
import org.csource.common.NameValuePair;
import org.csource.fastdfs.ClientGlobal;
import org.csource.fastdfs.DownloadCallback;
import org.csource.fastdfs.FileInfo;
import org.csource.fastdfs.ProtoCommon;
import org.csource.fastdfs.StorageClient1;
import org.csource.fastdfs.StructGroupStat;
import org.csource.fastdfs.StructStorageStat;
import org.csource.fastdfs.TrackerClient;
import org.csource.fastdfs.UploadCallback;
import org.csource.fastdfs.pool.ConnectionPool;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.zip.CRC32;

public class FdfsJavaDriver {
    static final String STEP_MARK = "@@FDFS_JAVA_STEP@@ ";
    static final String DONE_MARK = "@@FDFS_JAVA_DONE@@";

    static StorageClient1 client;
    static TrackerClient tracker;
    static Path work;

    /** A failed expectation inside a step (as opposed to an exception of the SDK). */
    static class Failed extends Exception {
        Failed(String msg) {
            super(msg);
        }
    }

    interface Body {
        void run(Map<String, Object> d) throws Exception;
    }

    // ------------------------------------------------------------------ reporting

    static void step(String name, Body body) {
        Map<String, Object> d = new LinkedHashMap<String, Object>();
        d.put("step", name);
        boolean ok;
        String error = null;
        long t0 = System.nanoTime();
        try {
            body.run(d);
            ok = true;
        } catch (Failed f) {
            ok = false;
            error = f.getMessage();
        } catch (Throwable t) {
            ok = false;
            error = "exception " + t.getClass().getName() + ": " + t.getMessage();
            Throwable c = t.getCause();
            if (c != null) {
                error += " (cause " + c.getClass().getName() + ": " + c.getMessage() + ")";
            }
        }
        d.put("ok", ok);
        d.put("errno", client == null ? 0 : (int) client.getErrorCode());
        d.put("error", error);
        d.put("ms", (System.nanoTime() - t0) / 1000000);
        System.out.println(STEP_MARK + json(d));
        System.out.flush();
    }

    static void check(boolean cond, String fmt, Object... args) throws Failed {
        if (!cond) {
            throw new Failed(String.format(fmt, args));
        }
    }

    static String json(Object o) {
        StringBuilder sb = new StringBuilder();
        writeJson(sb, o);
        return sb.toString();
    }

    @SuppressWarnings("unchecked")
    static void writeJson(StringBuilder sb, Object o) {
        if (o == null) {
            sb.append("null");
        } else if (o instanceof Boolean || o instanceof Integer || o instanceof Long
                || o instanceof Short || o instanceof Byte) {
            sb.append(o.toString());
        } else if (o instanceof Map) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<String, Object> e : ((Map<String, Object>) o).entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                writeJson(sb, e.getKey());
                sb.append(':');
                writeJson(sb, e.getValue());
            }
            sb.append('}');
        } else if (o instanceof List) {
            sb.append('[');
            boolean first = true;
            for (Object x : (List<Object>) o) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                writeJson(sb, x);
            }
            sb.append(']');
        } else {
            String s = o.toString();
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                if (c == '"' || c == '\\') {
                    sb.append('\\').append(c);
                } else if (c < 0x20 || c > 0x7e) {
                    sb.append(String.format("\\u%04x", (int) c));
                } else {
                    sb.append(c);
                }
            }
            sb.append('"');
        }
    }

    // ------------------------------------------------------------------ helpers

    static byte[] payload(int n, long seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    static int crc32(byte[] b) {
        CRC32 c = new CRC32();
        c.update(b);
        return (int) c.getValue();
    }

    static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.write(p, 0, p.length);
        }
        return out.toByteArray();
    }

    static String describe(byte[] got, byte[] want) {
        if (got == null) {
            return "null (errno " + client.getErrorCode() + ")";
        }
        int i = 0;
        int n = Math.min(got.length, want.length);
        while (i < n && got[i] == want[i]) {
            i++;
        }
        return got.length + " bytes (want " + want.length + "), first difference at " + i;
    }

    static void checkBytes(byte[] got, byte[] want, String what) throws Failed {
        check(got != null && Arrays.equals(got, want), "%s: got %s", what, describe(got, want));
    }

    static String checkFileId(String fid, String what) throws Failed {
        check(fid != null, "%s returned null, errno %d", what, (int) client.getErrorCode());
        check(fid.matches("[A-Za-z0-9_]{1,16}/M[0-9A-F]{2}/[0-9A-F]{2}/[0-9A-F]{2}/[A-Za-z0-9_-]{27}.+"),
                "%s: malformed file id %s", what, fid);
        return fid;
    }

    static Map<String, String> metaMap(NameValuePair[] list) {
        if (list == null) {
            return null;
        }
        Map<String, String> m = new TreeMap<String, String>();
        for (NameValuePair p : list) {
            m.put(p.getName(), p.getValue());
        }
        return m;
    }

    static NameValuePair[] meta(String... kv) {
        NameValuePair[] r = new NameValuePair[kv.length / 2];
        for (int i = 0; i < r.length; i++) {
            r[i] = new NameValuePair(kv[2 * i], kv[2 * i + 1]);
        }
        return r;
    }

    static Map<String, String> mapOf(String... kv) {
        Map<String, String> m = new TreeMap<String, String>();
        for (int i = 0; i + 1 < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return m;
    }

    static Map<String, Object> fileInfoMap(FileInfo fi) {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("from_server", fi.getFetchFromServer());
        m.put("type", (int) fi.getFileType());
        m.put("size", fi.getFileSize());
        m.put("crc32", fi.getCrc32() & 0xFFFFFFFFL);
        m.put("source_ip", fi.getSourceIpAddr());
        m.put("create_timestamp", fi.getCreateTimestamp().getTime() / 1000);
        return m;
    }

    /** An upload body written by the SDK's UploadCallback, in uneven chunks. */
    static class ChunkedUpload implements UploadCallback {
        final byte[] data;

        ChunkedUpload(byte[] data) {
            this.data = data;
        }

        public int send(OutputStream out) throws IOException {
            int off = 0;
            int chunk = 1;
            while (off < data.length) {
                int n = Math.min(chunk, data.length - off);
                out.write(data, off, n);
                off += n;
                chunk = chunk * 3 + 7;
            }
            return 0;
        }
    }

    static class Collect implements DownloadCallback {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        long announced = -1;
        int calls;

        public int recv(long file_size, byte[] data, int bytes) {
            announced = file_size;
            calls++;
            out.write(data, 0, bytes);
            return 0;
        }
    }

    /** The name of a file that never existed: `fid` with CRC32 characters of its
     *  base64 part changed (source IP, timestamp and size, appender flag included, kept). */
    static String neverExisted(String fid) {
        int slash = fid.indexOf('/');
        int pos = slash + 1 + 10 + 24;  // 27 base64 chars after "Mxx/xx/xx/"; 24..25 are CRC bits
        char[] c = fid.toCharArray();
        for (int i = pos; i < pos + 2; i++) {
            c[i] = c[i] == 'A' ? 'B' : 'A';
        }
        return new String(c);
    }

    // ------------------------------------------------------------------ shared steps

    static String uploadedFid;

    /** Calls on the same pool after an error reply: each must succeed. */
    static void afterError(final String tag) {
        final byte[] data = payload(48 * 1024 + 5, tag.hashCode());
        for (int round = 1; round <= 2; round++) {
            final String r = tag + "/" + round;
            uploadedFid = null;
            step("after:" + r + ":upload", d -> {
                uploadedFid = checkFileId(client.upload_file1(data, "bin", null), "upload_file1");
                d.put("file_id", uploadedFid);
            });
            step("after:" + r + ":download", d -> {
                check(uploadedFid != null, "no file: this round's upload failed");
                checkBytes(client.download_file1(uploadedFid), data, "download_file1");
            });
            step("after:" + r + ":query_file_info", d -> {
                check(uploadedFid != null, "no file: this round's upload failed");
                FileInfo fi = client.query_file_info1(uploadedFid);
                check(fi != null, "query_file_info1 returned null, errno %d", (int) client.getErrorCode());
                check(fi.getFileSize() == data.length, "size %d != %d", fi.getFileSize(), data.length);
                d.put("info", fileInfoMap(fi));
            });
            step("after:" + r + ":set_metadata", d -> {
                check(uploadedFid != null, "no file: this round's upload failed");
                int rc = client.set_metadata1(uploadedFid, meta("round", r),
                        ProtoCommon.STORAGE_SET_METADATA_FLAG_OVERWRITE);
                check(rc == 0, "set_metadata1 -> %d", rc);
            });
            step("after:" + r + ":get_metadata", d -> {
                check(uploadedFid != null, "no file: this round's upload failed");
                Map<String, String> m = metaMap(client.get_metadata1(uploadedFid));
                check(mapOf("round", r).equals(m), "get_metadata1 -> %s (errno %d)", m,
                        (int) client.getErrorCode());
            });
            step("after:" + r + ":delete", d -> {
                check(uploadedFid != null, "no file: this round's upload failed");
                int rc = client.delete_file1(uploadedFid);
                check(rc == 0, "delete_file1 -> %d", rc);
            });
        }
        step("after:" + tag + ":list_groups", d -> {
            StructGroupStat[] groups = tracker.listGroups(null);
            check(groups != null && groups.length > 0, "listGroups -> %s (errno %d)",
                    groups == null ? "null" : "[]", (int) tracker.getErrorCode());
        });
    }

    static void expectErrno(Map<String, Object> d, Object result, int want, String what) throws Failed {
        int errno = client.getErrorCode();
        d.put("expected_errno", want);
        d.put("result", result == null ? null : result.toString());
        check(errno == want, "%s: errno %d, expected %d (result %s)", what, errno, want, result);
    }

    // ------------------------------------------------------------------ scenarios

    static String masterFid, slaveFid, appenderFid, regeneratedFid, localFid, callbackFid;
    static final byte[] MASTER = payload(100 * 1024 + 17, 1);

    static void basic() throws Exception {
        final NameValuePair[] meta1 = meta("width", "1024", "height", "768", "author", "java-sdk");
        step("upload_bytes_with_meta", d -> {
            masterFid = checkFileId(client.upload_file1(MASTER, "jpg", meta1), "upload_file1(bytes)");
            d.put("file_id", masterFid);
            d.put("size", MASTER.length);
            d.put("crc32", crc32(MASTER) & 0xFFFFFFFFL);
        });
        step("download_whole", d -> checkBytes(client.download_file1(masterFid), MASTER, "download_file1"));
        step("download_ranged", d -> {
            long[][] ranges = {{0, 1}, {0, 100}, {1000, 0}, {MASTER.length - 1, 1},
                    {12345, 6789}, {MASTER.length - 10, 10}};
            for (long[] r : ranges) {
                int off = (int) r[0];
                int end = r[1] == 0 ? MASTER.length : off + (int) r[1];
                checkBytes(client.download_file1(masterFid, r[0], r[1]),
                        Arrays.copyOfRange(MASTER, off, end),
                        "download_file1(offset=" + r[0] + ", length=" + r[1] + ")");
            }
            d.put("ranges", ranges.length);
        });
        step("download_callback", d -> {
            Collect c = new Collect();
            int rc = client.download_file1(masterFid, c);
            check(rc == 0, "download_file1(callback) -> %d", rc);
            check(c.announced == MASTER.length, "callback told file size %d", c.announced);
            checkBytes(c.out.toByteArray(), MASTER, "download_file1(callback)");
            d.put("callback_calls", c.calls);
        });
        step("download_ranged_callback", d -> {
            Collect c = new Collect();
            int rc = client.download_file1(masterFid, 50000, 20000, c);
            check(rc == 0, "download_file1(offset, length, callback) -> %d", rc);
            checkBytes(c.out.toByteArray(), Arrays.copyOfRange(MASTER, 50000, 70000),
                    "download_file1(50000, 20000, callback)");
        });
        step("download_to_local_file", d -> {
            Path p = work.resolve("master.back");
            int rc = client.download_file1(masterFid, p.toString());
            check(rc == 0, "download_file1(local file) -> %d", rc);
            checkBytes(Files.readAllBytes(p), MASTER, "download_file1(local file)");
        });
        step("get_metadata_after_upload", d -> {
            Map<String, String> m = metaMap(client.get_metadata1(masterFid));
            d.put("meta", m);
            check(metaMap(meta1).equals(m), "metadata %s, expected %s", m, metaMap(meta1));
        });
        step("set_metadata_overwrite", d -> {
            int rc = client.set_metadata1(masterFid, meta("color", "red", "width", "10"),
                    ProtoCommon.STORAGE_SET_METADATA_FLAG_OVERWRITE);
            check(rc == 0, "set_metadata1(overwrite) -> %d", rc);
            Map<String, String> m = metaMap(client.get_metadata1(masterFid));
            d.put("meta", m);
            check(mapOf("color", "red", "width", "10").equals(m), "after overwrite: %s", m);
        });
        step("set_metadata_merge", d -> {
            int rc = client.set_metadata1(masterFid, meta("width", "20", "shape", "round"),
                    ProtoCommon.STORAGE_SET_METADATA_FLAG_MERGE);
            check(rc == 0, "set_metadata1(merge) -> %d", rc);
            Map<String, String> m = metaMap(client.get_metadata1(masterFid));
            d.put("meta", m);
            check(mapOf("color", "red", "width", "20", "shape", "round").equals(m), "after merge: %s", m);
        });
        step("get_file_info", d -> {
            FileInfo fi = client.get_file_info1(masterFid);
            check(fi != null, "get_file_info1 returned null, errno %d", (int) client.getErrorCode());
            d.put("info", fileInfoMap(fi));
            check(fi.getFileType() == FileInfo.FILE_TYPE_NORMAL, "file type %d", fi.getFileType());
            check(fi.getFileSize() == MASTER.length, "size %d", fi.getFileSize());
            check((int) fi.getCrc32() == crc32(MASTER), "crc32 %x != %x", fi.getCrc32(), crc32(MASTER));
        });
        step("query_file_info", d -> {
            FileInfo fi = client.query_file_info1(masterFid);
            check(fi != null, "query_file_info1 returned null, errno %d", (int) client.getErrorCode());
            d.put("info", fileInfoMap(fi));
            check(fi.getFileSize() == MASTER.length, "size %d", fi.getFileSize());
            check((int) fi.getCrc32() == crc32(MASTER), "crc32 %x != %x", fi.getCrc32(), crc32(MASTER));
        });
        final byte[] local = payload(70000, 2);
        step("upload_local_file", d -> {
            Path p = work.resolve("local-upload.txt");
            Files.write(p, local);
            // null ext: the SDK takes "txt" from the local file name
            localFid = checkFileId(client.upload_file1(p.toString(), null, null), "upload_file1(local file)");
            d.put("file_id", localFid);
            check(localFid.endsWith(".txt"), "file id %s does not keep the .txt extension", localFid);
            checkBytes(client.download_file1(localFid), local, "download of the uploaded local file");
        });
        final byte[] cb = payload(200001, 3);
        step("upload_callback_with_meta", d -> {
            callbackFid = checkFileId(client.upload_file1(null, cb.length, new ChunkedUpload(cb), "dat",
                    meta("via", "callback")), "upload_file1(callback)");
            d.put("file_id", callbackFid);
            checkBytes(client.download_file1(callbackFid), cb, "download of the callback upload");
            Map<String, String> m = metaMap(client.get_metadata1(callbackFid));
            check(mapOf("via", "callback").equals(m), "metadata %s", m);
        });
        final byte[] slave = payload(30000, 4);
        step("upload_slave", d -> {
            slaveFid = checkFileId(client.upload_file1(masterFid, "_150x150", slave, "png",
                    meta("kind", "thumb")), "upload_file1(slave)");
            d.put("master_file_id", masterFid);
            d.put("file_id", slaveFid);
            checkBytes(client.download_file1(slaveFid), slave, "download of the slave");
            Map<String, String> m = metaMap(client.get_metadata1(slaveFid));
            check(mapOf("kind", "thumb").equals(m), "slave metadata %s", m);
        });
        step("slave_file_info", d -> {
            FileInfo fi = client.get_file_info1(slaveFid);
            check(fi != null, "get_file_info1(slave) returned null, errno %d", (int) client.getErrorCode());
            d.put("info", fileInfoMap(fi));
            check(fi.getFileType() == FileInfo.FILE_TYPE_SLAVE, "file type %d, expected slave",
                    fi.getFileType());
            check(fi.getFileSize() == slave.length, "size %d", fi.getFileSize());
            check((int) fi.getCrc32() == crc32(slave), "crc32 %x != %x", fi.getCrc32(), crc32(slave));
        });
        step("upload_slave_callback", d -> {
            String fid = checkFileId(client.upload_file1(masterFid, "_cb", slave.length,
                    new ChunkedUpload(slave), "png", null), "upload_file1(slave, callback)");
            d.put("file_id", fid);
            checkBytes(client.download_file1(fid), slave, "download of the callback slave");
        });

        final byte[] a1 = payload(10000, 5);
        final byte[] a2 = payload(300000, 6);
        final byte[] mod = payload(5000, 7);
        final byte[][] content = new byte[1][];
        step("upload_appender", d -> {
            appenderFid = checkFileId(client.upload_appender_file1(a1, "log", meta("a", "1")),
                    "upload_appender_file1");
            d.put("file_id", appenderFid);
            content[0] = a1;
            checkBytes(client.download_file1(appenderFid), content[0], "download of the appender");
        });
        step("append", d -> {
            int rc = client.append_file1(appenderFid, a2);
            check(rc == 0, "append_file1 -> %d", rc);
            content[0] = concat(content[0], a2);
            checkBytes(client.download_file1(appenderFid), content[0], "download after append");
        });
        step("append_callback", d -> {
            int rc = client.append_file1(appenderFid, a1.length, new ChunkedUpload(a1));
            check(rc == 0, "append_file1(callback) -> %d", rc);
            content[0] = concat(content[0], a1);
            checkBytes(client.download_file1(appenderFid), content[0], "download after callback append");
        });
        step("modify", d -> {
            int off = 7777;
            int rc = client.modify_file1(appenderFid, off, mod);
            check(rc == 0, "modify_file1 -> %d", rc);
            System.arraycopy(mod, 0, content[0], off, mod.length);
            checkBytes(client.download_file1(appenderFid), content[0], "download after modify");
        });
        step("modify_at_end", d -> {
            int off = content[0].length;
            int rc = client.modify_file1(appenderFid, off, mod);
            check(rc == 0, "modify_file1(at end) -> %d", rc);
            content[0] = concat(content[0], mod);
            checkBytes(client.download_file1(appenderFid), content[0], "download after modify at end");
        });
        step("appender_file_info", d -> {
            FileInfo fi = client.get_file_info1(appenderFid);
            check(fi != null, "get_file_info1(appender) returned null, errno %d", (int) client.getErrorCode());
            d.put("info", fileInfoMap(fi));
            check(fi.getFileType() == FileInfo.FILE_TYPE_APPENDER, "file type %d, expected appender",
                    fi.getFileType());
            check(fi.getFileSize() == content[0].length, "size %d != %d", fi.getFileSize(), content[0].length);
            check((int) fi.getCrc32() == crc32(content[0]), "crc32 %x != %x", fi.getCrc32(), crc32(content[0]));
        });
        step("truncate", d -> {
            int rc = client.truncate_file1(appenderFid, 12345);
            check(rc == 0, "truncate_file1(12345) -> %d", rc);
            content[0] = Arrays.copyOf(content[0], 12345);
            checkBytes(client.download_file1(appenderFid), content[0], "download after truncate");
        });
        step("truncate_to_zero_and_append", d -> {
            int rc = client.truncate_file1(appenderFid);
            check(rc == 0, "truncate_file1() -> %d", rc);
            // (not downloaded while empty: C's storage answers that with EINVAL and closes)
            FileInfo fi = client.query_file_info1(appenderFid);
            check(fi != null && fi.getFileSize() == 0, "after truncate to 0: %s (errno %d)",
                    fi == null ? "null" : "size " + fi.getFileSize(), (int) client.getErrorCode());
            rc = client.append_file1(appenderFid, a2);
            check(rc == 0, "append_file1 after truncate -> %d", rc);
            content[0] = a2.clone();
            checkBytes(client.download_file1(appenderFid), content[0], "download after truncate+append");
        });
        step("regenerate_appender_filename", d -> {
            regeneratedFid = checkFileId(client.regenerate_appender_filename1(appenderFid),
                    "regenerate_appender_filename1");
            d.put("old_file_id", appenderFid);
            d.put("file_id", regeneratedFid);
            check(!regeneratedFid.equals(appenderFid), "regenerated file id unchanged");
            checkBytes(client.download_file1(regeneratedFid), content[0], "download of the regenerated file");
            byte[] old = client.download_file1(appenderFid);
            check(old == null && client.getErrorCode() == 2,
                    "old appender id still downloadable (%s)", describe(old, content[0]));
            FileInfo fi = client.get_file_info1(regeneratedFid);
            check(fi != null, "get_file_info1(regenerated) null, errno %d", (int) client.getErrorCode());
            d.put("info", fileInfoMap(fi));
            check(fi.getFileType() != FileInfo.FILE_TYPE_APPENDER, "regenerated file is still an appender");
            check(fi.getFileSize() == content[0].length, "size %d", fi.getFileSize());
            // (C's storage renames the data file only: metadata is not checked here)
        });
        step("delete", d -> {
            int rc = client.delete_file1(localFid);
            check(rc == 0, "delete_file1 -> %d", rc);
            byte[] got = client.download_file1(localFid);
            check(got == null && client.getErrorCode() == 2, "deleted file: download gives %s",
                    describe(got, new byte[0]));
            rc = client.delete_file1(localFid);
            check(rc == 2, "second delete_file1 -> %d, expected 2", rc);
            FileInfo fi = client.query_file_info1(localFid);
            check(fi == null && client.getErrorCode() == 2, "query_file_info1 of a deleted file: %s errno %d",
                    fi, (int) client.getErrorCode());
        });
        step("list_groups", d -> {
            StructGroupStat[] groups = tracker.listGroups(null);
            check(groups != null, "listGroups -> null, errno %d", (int) tracker.getErrorCode());
            List<Object> out = new ArrayList<Object>();
            for (StructGroupStat g : groups) {
                Map<String, Object> m = new LinkedHashMap<String, Object>();
                m.put("name", g.getGroupName());
                m.put("storage_count", g.getStorageCount());
                m.put("readable_count", g.getReadableServerCount());
                m.put("writable_count", g.getWritableServerCount());
                m.put("storage_port", g.getStoragePort());
                m.put("store_path_count", g.getStorePathCount());
                m.put("subdir_count_per_path", g.getSubdirCountPerPath());
                m.put("total_mb", g.getTotalMB());
                m.put("free_mb", g.getFreeMB());
                out.add(m);
            }
            d.put("groups", out);
        });
        step("list_storages", d -> {
            StructGroupStat[] groups = tracker.listGroups(null);
            check(groups != null, "listGroups -> null, errno %d", (int) tracker.getErrorCode());
            List<Object> out = new ArrayList<Object>();
            for (StructGroupStat g : groups) {
                StructStorageStat[] ss = tracker.listStorages(null, g.getGroupName());
                check(ss != null, "listStorages(%s) -> null, errno %d", g.getGroupName(),
                        (int) tracker.getErrorCode());
                for (StructStorageStat s : ss) {
                    Map<String, Object> m = new LinkedHashMap<String, Object>();
                    m.put("group", g.getGroupName());
                    m.put("id", s.getId());
                    m.put("ip", s.getIpAddr());
                    m.put("port", s.getStoragePort());
                    m.put("status", (int) s.getStatus());
                    m.put("store_path_count", s.getStorePathCount());
                    m.put("total_upload_count", s.getTotalUploadCount());
                    m.put("success_upload_count", s.getSuccessUploadCount());
                    out.add(m);
                }
                StructStorageStat[] one = tracker.listStorages(null, g.getGroupName(), ss[0].getIpAddr());
                check(one != null && one.length == 1 && one[0].getIpAddr().equals(ss[0].getIpAddr()),
                        "listStorages(%s, %s) -> %s", g.getGroupName(), ss[0].getIpAddr(),
                        one == null ? "null" : one.length + " storages");
            }
            d.put("storages", out);
        });
        step("pool_state", d -> {
            check(ClientGlobal.g_connection_pool_enabled, "connection pool is off");
            String s = new ConnectionPool().toString();
            d.put("pool", s == null ? "" : s);
        });
    }

    /** Warm-up: a few successful calls so the error goes down an already used pooled connection. */
    static void warmUp(String tag) {
        final byte[] data = payload(4096, 99);
        step("warmup:" + tag, d -> {
            String fid = checkFileId(client.upload_file1(data, "txt", null), "upload_file1");
            checkBytes(client.download_file1(fid), data, "download_file1");
            check(client.delete_file1(fid) == 0, "delete_file1 -> %d", (int) client.getErrorCode());
        });
    }

    static final String[] ERROR_SCENARIOS = {
        "slave_missing_master", "slave_exists", "append_missing", "append_deleted_1mib",
        "modify_missing", "truncate_missing",
    };

    static String setupFid;

    static void errorScenario(String name) throws Exception {
        warmUp(name);
        setupFid = null;
        final byte[] small = payload(8 * 1024, 11);
        switch (name) {
            case "slave_missing_master":
                step("setup:" + name, d -> {
                    setupFid = checkFileId(client.upload_file1(MASTER, "jpg", null), "upload_file1(master)");
                    check(client.delete_file1(setupFid) == 0, "delete_file1(master) -> %d",
                            (int) client.getErrorCode());
                    d.put("master_file_id", setupFid);
                });
                step("error:" + name, d -> {
                    String r = client.upload_file1(setupFid, "_s", small, "jpg", null);
                    expectErrno(d, r, 2, "upload_file1(slave of a deleted master)");
                    check(r == null, "slave upload for a deleted master returned %s", r);
                });
                break;
            case "slave_exists":
                step("setup:" + name, d -> {
                    setupFid = checkFileId(client.upload_file1(MASTER, "jpg", null), "upload_file1(master)");
                    String s = checkFileId(client.upload_file1(setupFid, "_s", small, "jpg", null),
                            "first upload_file1(slave)");
                    d.put("master_file_id", setupFid);
                    d.put("slave_file_id", s);
                });
                step("error:" + name, d -> {
                    String r = client.upload_file1(setupFid, "_s", small, "jpg", null);
                    expectErrno(d, r, 17, "upload_file1(same slave again)");
                    check(r == null, "second slave upload returned %s", r);
                });
                break;
            case "append_missing":
                step("setup:" + name, d -> {
                    String a = checkFileId(client.upload_appender_file1(small, "log", null),
                            "upload_appender_file1");
                    setupFid = neverExisted(a);
                    d.put("existing_appender", a);
                    d.put("missing_appender", setupFid);
                });
                step("error:" + name, d -> {
                    int rc = client.append_file1(setupFid, small);
                    expectErrno(d, rc, 2, "append_file1(missing appender, 8 KiB)");
                });
                break;
            case "append_deleted_1mib":
                step("setup:" + name, d -> {
                    setupFid = checkFileId(client.upload_appender_file1(small, "log", null),
                            "upload_appender_file1");
                    check(client.delete_file1(setupFid) == 0, "delete_file1(appender) -> %d",
                            (int) client.getErrorCode());
                    d.put("appender", setupFid);
                });
                step("error:" + name, d -> {
                    int rc = client.append_file1(setupFid, payload(1024 * 1024, 12));
                    expectErrno(d, rc, 2, "append_file1(deleted appender, 1 MiB)");
                });
                break;
            case "modify_missing":
                step("setup:" + name, d -> {
                    String a = checkFileId(client.upload_appender_file1(small, "log", null),
                            "upload_appender_file1");
                    setupFid = neverExisted(a);
                    d.put("existing_appender", a);
                    d.put("missing_appender", setupFid);
                });
                step("error:" + name, d -> {
                    int rc = client.modify_file1(setupFid, 0, small);
                    expectErrno(d, rc, 2, "modify_file1(missing appender, 8 KiB at 0)");
                });
                break;
            case "truncate_missing":
                step("setup:" + name, d -> {
                    String a = checkFileId(client.upload_appender_file1(small, "log", null),
                            "upload_appender_file1");
                    setupFid = neverExisted(a);
                    d.put("missing_appender", setupFid);
                });
                step("error:" + name, d -> {
                    int rc = client.truncate_file1(setupFid, 0);
                    expectErrno(d, rc, 2, "truncate_file1(missing appender)");
                });
                break;
            default:
                throw new IllegalArgumentException("unknown scenario " + name);
        }
        afterError(name);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: FdfsJavaDriver <client.properties> <work dir> <scenario>");
            System.exit(2);
        }
        work = Paths.get(args[1]);
        final String props = args[0];
        final String scenario = args[2];
        step("init", d -> {
            ClientGlobal.initByProperties(props);
            d.put("pool_enabled", ClientGlobal.g_connection_pool_enabled);
            d.put("config", ClientGlobal.configInfo());
            check(ClientGlobal.g_connection_pool_enabled, "connection pool is not enabled");
        });
        client = new StorageClient1();
        tracker = new TrackerClient();
        if (scenario.equals("basic")) {
            basic();
        } else if (scenario.equals("all_errors")) {
            for (String s : ERROR_SCENARIOS) {
                errorScenario(s);
            }
        } else {
            errorScenario(scenario);
        }
        System.out.println(DONE_MARK);
        System.out.flush();
        System.exit(0);
    }
}
