"""Time the HTML viewer (``pointseg view --html``) in headless Chromium: page size, writing time,
load time (navigation start to the page ready and to its first frame finished, read by the page
itself) and frames per second while the view turns (every point, and as while dragging).

    PYTHONPATH=$PWD .venv/bin/python tools/bench_html_view.py [--points 1000000] [--scan FILE]

The room is the synthetic box room of tests/test_viewer.py (flat RGB per object, 10 % wrong
predictions) unless ``--scan`` names a file. Chromium runs headless with WebGL on SwiftShader
(the CPU), as in the tests: the path of a browser without a usable GPU (one with a GPU draws
there instead; not measured by this script).
The browser (a fresh one for each load) is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port, no network). Prints numbers only; shared machines are
noisy, so compare rows of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CHROMIUM_FLAGS = ("--headless=new", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--proxy-server=127.0.0.1:9", "--no-first-run", "--no-default-browser-check",
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding")


class Browser:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out)."""

    def __init__(self, exe: str, profile: Path, size: str) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def child() -> None:             # move the pipe ends to the fds Chromium reads and writes
            a, b = os.dup(cmd_r), os.dup(out_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size.replace('x', ',')}",
                "--remote-debugging-pipe", "about:blank",
                # the sandbox refuses root and needs user namespaces containers often lack; the page
                # opened is our own local file
                "--no-sandbox"]
        self.proc = subprocess.Popen(args, preexec_fn=child, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.session = ""

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def attach(self) -> None:
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]

    def evaluate(self, expr: str, timeout: float = 600) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True,
                                           "timeout": int(timeout * 1000)})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails'].get('text')} "
                               f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd_w)
        os.close(self._out_r)


def load(browser: Browser, url: str) -> tuple[dict[str, Any], float]:
    """Navigate to ``url``; (the page's own timings, seconds from navigate to ready seen here)."""
    t = time.perf_counter()
    browser.send("Page.navigate", {"url": url})
    while True:   # the new document replaces the old one: wait for its window.pointseg
        state = browser.evaluate("location.href + ' ' + (window.pointseg ? 'y' : 'n')")
        if state == f"{url} y":
            break
        time.sleep(0.02)
    res = browser.evaluate("window.pointseg.ready.then(r => r)")
    status = browser.evaluate("document.getElementById('status').textContent")
    if not status.startswith("ready"):
        raise RuntimeError(f"the page says: {status}")
    return res, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--scan", help="a scan or segment output to use instead of the synthetic room")
    ap.add_argument("--size", default="1280x800", help="browser window, WxH")
    ap.add_argument("--loads", type=int, default=3, help="page loads to time (median reported)")
    ap.add_argument("--frames", type=int, default=60, help="frames of the turning view")
    args = ap.parse_args()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("bench_html_view: needs Chromium (Debian: apt-get install chromium)")
    from pointseg.viewer.html import write_html

    if args.scan:
        from pointseg.io.scans import read_scan
        from pointseg.viewer.render import resolve_classes
        room = read_scan(args.scan)
        classes = resolve_classes(room)
    else:
        from test_viewer import make_room
        room = make_room(args.points)
        classes = room.classes
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter()
        page = write_html(d / "room.html", room.xyz, room.rgb, room.pred, room.label, classes,
                          scan=str(args.scan or "synthetic room"))
        write_s = time.perf_counter() - t
        url = (d / "room.html").as_uri()
        # A fresh browser for every load: a page left behind keeps the (software) GPU busy.
        loads = []
        for i in range(args.loads):
            browser = Browser(exe, d / f"profile{i}", args.size)
            try:
                browser.attach()
                browser.send("Page.enable")
                loads.append(load(browser, url))
                if i == args.loads - 1:
                    res = browser.evaluate(f"window.pointseg.bench({args.frames})")
                    version = browser.send("Browser.getVersion", session=False)["product"]
            finally:
                browser.close()
    ready = [r["ready_ms"] for r, _ in loads]
    decode = [r["decode_ms"] for r, _ in loads]
    seen = [s for _, s in loads]
    print(f"{version}, headless, WebGL on SwiftShader (CPU); window {args.size}")
    print(f"{room.num_points:,} points, {page.shown:,} in the page")
    print(f"{'page size':<52} {page.bytes / 1e6:8.1f} MB")
    print(f"{'write_html':<52} {write_s:8.2f} s")
    print(f"{'load: navigation start -> page ready (median)':<52} {statistics.median(ready) / 1e3:8.2f} s"
          f"   (runs: {', '.join(f'{v / 1e3:.2f}' for v in ready)})")
    print(f"{'  of which arrays decoded (from the page script start)':<52} {statistics.median(decode) / 1e3:8.2f} s")
    print(f"{'load as seen by this script (navigate -> ready)':<52} {statistics.median(seen):8.2f} s")
    print(f"{'navigation start -> first frame finished (last load)':<52} {res['first_frame_ms'] / 1e3:8.2f} s")
    for key, what in (("full", "turning view, every point"), ("moving", "turning view, while moving")):
        f = res[key]
        if f is None:
            print(f"{what:<52} (not used: under 200,000 points or fast frames)")
            continue
        what = f"{what} ({f['points']:,} points)"
        print(f"{what:<52} {f['fps']:8.1f} frames/s ({f['ms'] / f['frames']:.0f} ms a frame)")

if __name__ == "__main__":
    main()
