"""A real browser for the console tests: Debian's chromium, headless, driven over the
DevTools protocol (websocket-client).

  FDFS_CHROMIUM            the browser (default: chromium on PATH)
  FDFS_REQUIRE_BROWSER=1   fail instead of skip when it is missing
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from fdfs_helpers import wait_for


def chromium_path():
    exe = os.environ.get("FDFS_CHROMIUM") or shutil.which("chromium")
    if not exe:
        if os.environ.get("FDFS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not found (apt-get install chromium)")
        pytest.skip("chromium not installed")
    return exe


class Browser:
    """One headless chromium with one page."""

    def __init__(self, width=1280, height=1000):
        import websocket  # websocket-client, in the runner venv

        # Everything chromium writes (its profile, and the scratch files it makes in
        # TMPDIR) goes under one directory, removed at close.
        self.root = tempfile.mkdtemp(prefix="fdfs-chromium-")
        self.profile = os.path.join(self.root, "profile")
        scratch = os.path.join(self.root, "tmp")
        os.makedirs(scratch)
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "--user-data-dir=" + self.profile,
             "--window-size=%d,%d" % (width, height), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env=dict(os.environ, TMPDIR=scratch))
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"
            port = wait_for(lambda: port_file.exists() and port_file.read_text().split()[0],
                            30, what="chromium's DevTools port")

            def page_target():
                with urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port, timeout=5) as r:
                    targets = json.load(r)
                return next((t for t in targets if t.get("type") == "page"), None)
            target = wait_for(page_target, 30, what="chromium's page")
            self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})

    def goto(self, url):
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.eval("document.readyState") == "complete", 30,
                 what="%s to load" % url)

    def eval(self, expression):
        """The value of a JavaScript expression in the page (JSON-able)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("page error: %s" % r["exceptionDetails"])
        return r["result"].get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
        return path

    def close(self):
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # chromium may still be writing its profile for a moment after it exits
        deadline = time.monotonic() + 10
        while os.path.exists(self.root) and time.monotonic() < deadline:
            shutil.rmtree(self.root, ignore_errors=True)
