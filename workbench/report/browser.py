"""Open a report in headless Chromium: check that every figure loaded and nothing logged an error; screenshots.

Only the standard library: Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes, commands on the browser's fd 3, replies and events on its fd 4), so no
websocket client or browser-automation package is needed.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
                  "headless_shell")
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


def find_chromium() -> str | None:
    """The Chromium executable: $WORKBENCH_CHROMIUM if set, else the first of CHROMIUM_NAMES on PATH."""
    explicit = os.environ.get("WORKBENCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _require_chromium(chromium: str | None) -> str:
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError(
            "no Chromium found (looked for $WORKBENCH_CHROMIUM, then " + ", ".join(CHROMIUM_NAMES) + " on PATH); "
            "install it, e.g. `apt-get install -y chromium` on Debian/Ubuntu"
        )
    return exe


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1400, height: int = 2400,
               chromium: str | None = None, timeout: float = 60) -> Path:
    """Render `html_path` to a PNG of width x height CSS pixels (what a reader sees at the top of the page)."""
    exe = _require_chromium(chromium)
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wb-chromium-") as profile:
        cmd = [exe, *HEADLESS_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png_path}", Path(html_path).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png_path.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png_path


@dataclass
class PageCheck:
    """What a headless browser saw when it opened a page."""

    url: str
    images: list[dict[str, Any]] = field(default_factory=list)  # {src, naturalWidth, naturalHeight, complete}
    errors: list[str] = field(default_factory=list)              # console errors, exceptions, blocked loads
    warnings: list[str] = field(default_factory=list)
    title: str = ""
    cards: list[dict[str, Any]] = field(default_factory=list)    # summary cards: {label, ci, flagged}
    notices: list[dict[str, Any]] = field(default_factory=list)  # {kind, text, top (px from the page top)}

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [im for im in self.images if not im.get("complete") or not im.get("naturalWidth")]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.broken_images


class _DevToolsPipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == self.next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        event = self._read_until(lambda m: m.get("method") == method, timeout)
        self.events.remove(event)
        return event

    def _read_until(self, wanted, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)
                if wanted(msg):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from Chromium within {timeout:.0f} s")
            ready, _, _ = select.select([self.read_fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
                self.buffer += chunk


# What the page shows, as the browser laid it out: images, the headline cards (with their CI line), and the notices
# (failed run, failed checks) with their vertical position (a notice below the first screen is easy to miss).
_IMAGES_JS = """JSON.stringify({title: document.title, images: Array.from(document.images).map(i => ({
  src: i.currentSrc.slice(0, 48), naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
  complete: i.complete})),
  cards: Array.from(document.querySelectorAll('#summary .card')).map(c => ({
    label: c.querySelector('.label')?.innerText || '', ci: c.querySelector('.ci')?.innerText || '',
    flagged: c.classList.contains('flagged')})),
  notices: Array.from(document.querySelectorAll('.notice')).map(n => ({
    kind: n.className, text: n.innerText.slice(0, 2000), top: n.getBoundingClientRect().top}))})"""


def check_page(html_path: str | os.PathLike, *, chromium: str | None = None, timeout: float = 60) -> PageCheck:
    """Open `html_path` in headless Chromium; return the images' load state and every console error/warning,
    uncaught exception and browser log entry (failed or blocked loads, CSP violations) of the page."""
    exe = _require_chromium(chromium)
    url = Path(html_path).resolve().as_uri()
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # Move the browser's ends above fd 10 so that putting them on 3 and 4 cannot clobber one another.
    high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_r)
    os.close(from_browser_w)
    to_browser_r, from_browser_w = high_r, high_w

    def on_fds_3_and_4() -> None:  # runs in the child, between fork and exec
        os.dup2(to_browser_r, 3)
        os.dup2(from_browser_w, 4)

    with tempfile.TemporaryDirectory(prefix="wb-chromium-") as profile:
        cmd = [exe, *HEADLESS_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
               "--window-size=1400,1000", "about:blank"]
        log_path = Path(profile) / "chromium-stderr.log"
        with open(log_path, "wb") as log:
            # close_fds=False: Python's own fds are non-inheritable (PEP 446); only 3 and 4 reach the browser
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                    close_fds=False, preexec_fn=on_fds_3_and_4)
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _DevToolsPipe(proc, to_browser_w, from_browser_r)
        try:
            check = _inspect(pipe, url, timeout)
        except (RuntimeError, TimeoutError) as err:
            stderr = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise RuntimeError(f"headless Chromium ({exe}) failed on {url}: {err}\nchromium stderr:\n{stderr}") from err
        finally:
            os.close(to_browser_w)
            os.close(from_browser_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return check


def _inspect(pipe: _DevToolsPipe, url: str, timeout: float) -> PageCheck:
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.events.clear()  # about:blank's own events are not the page's
    pipe.send("Page.navigate", {"url": url}, session=session)
    pipe.wait_event("Page.loadEventFired", timeout=timeout)
    result = pipe.send("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True}, session=session)
    # late console messages (e.g. image decode errors) arrive right after load: drain briefly
    try:
        pipe._read_until(lambda m: False, 0.5)
    except TimeoutError:
        pass
    page = json.loads(result["result"]["value"])
    check = PageCheck(url=url, images=page["images"], title=page["title"], cards=page["cards"],
                      notices=page["notices"])
    for event in pipe.events:
        _classify(event, check)
    try:
        pipe.send("Browser.close", timeout=5)
    except (RuntimeError, TimeoutError):
        pass  # the browser may close the pipe before it answers
    return check


def _classify(event: dict[str, Any], check: PageCheck) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        if params.get("type") in ("error", "assert"):
            check.errors.append(f"console.{params['type']}: {text}")
        elif params.get("type") == "warning":
            check.warnings.append(f"console.warn: {text}")
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        check.errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
    elif method == "Log.entryAdded":
        entry = params.get("entry", {})
        text = f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
        if entry.get("level") == "error":
            check.errors.append(text)
        elif entry.get("level") == "warning":
            check.warnings.append(text)
