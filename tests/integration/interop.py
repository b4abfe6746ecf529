"""Where the real C FastDFS 6.16 build and the official Java SDK are, for interop tests.

`./build.sh test` builds the C daemons and tools once per checkout into target/c-fastdfs
(from ../shared/interop) and points FDFS_C_DIR at it; FDFS_JAVA_SDK names the SDK's
source archive, compiled here once into target/java-sdk with `javac` alone.

Environment:
  FDFS_C_DIR        the build-c-fastdfs.sh DEST (default <repo>/target/c-fastdfs)
  FDFS_JAVA_SDK     fastdfs-client-java.tar.gz (default ../shared/interop/...)
  FDFS_REQUIRE_C=1  fail instead of skip when either is missing
"""

import fcntl
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
C_DIR = Path(os.environ.get("FDFS_C_DIR") or REPO / "target" / "c-fastdfs")
JAVA_SDK_ARCHIVE = Path(
    os.environ.get("FDFS_JAVA_SDK") or REPO.parent / "shared" / "interop" / "fastdfs-client-java.tar.gz"
)
JAVA_BUILD = REPO / "target" / "java-sdk"


def _missing(what):
    if os.environ.get("FDFS_REQUIRE_C") == "1":
        pytest.fail(what)
    pytest.skip(what)


def c_bin(name):
    """Path of one C FastDFS program (fdfs_trackerd, fdfs_test, ...), or skip/fail."""
    path = C_DIR / "usr" / "bin" / name
    if not os.access(path, os.X_OK):
        _missing("C FastDFS %s not built in %s (../shared/interop/build-c-fastdfs.sh)" % (name, C_DIR))
    return path


def run_c(tool, *args, timeout=60):
    """Runs one C FastDFS tool; its CompletedProcess (text output)."""
    return subprocess.run([str(c_bin(tool)), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def java_sdk_classes():
    """Directory holding the compiled official Java SDK (org.csource.fastdfs), built once."""
    javac = shutil.which("javac")
    if javac is None:
        _missing("javac not installed (Debian: default-jdk-headless)")
    if not JAVA_SDK_ARCHIVE.is_file():
        _missing("Java SDK archive missing: %s" % JAVA_SDK_ARCHIVE)
    classes = JAVA_BUILD / "classes"
    stamp = JAVA_BUILD / "built-from"
    JAVA_BUILD.mkdir(parents=True, exist_ok=True)
    # Suites running side by side compile it once between them.
    with open(JAVA_BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = "%s %d" % (JAVA_SDK_ARCHIVE, JAVA_SDK_ARCHIVE.stat().st_mtime_ns)
        if stamp.exists() and stamp.read_text() == key and classes.is_dir():
            return classes
        src = JAVA_BUILD / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(classes, ignore_errors=True)
        with tarfile.open(JAVA_SDK_ARCHIVE) as tar:
            tar.extractall(src, filter="data")
        sources = sorted(str(p) for p in (src).rglob("src/main/java/**/*.java"))
        assert sources, "no Java sources in %s" % JAVA_SDK_ARCHIVE
        subprocess.run(
            [javac, "-J-XX:-UsePerfData", "-nowarn", "-encoding", "UTF-8", "-d", str(classes)] + sources,
            check=True,
            capture_output=True,
        )
        stamp.write_text(key)
        return classes
