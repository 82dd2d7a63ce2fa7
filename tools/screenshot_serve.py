#!/usr/bin/env python3
"""Screenshot `devise serve` ranking one image: the picture of the page in the README.

    python tools/screenshot_serve.py runs/reproduce/devise runs/reproduce/softmax \
        --image val_0.JPEG --out docs/serve.png

Starts `devise serve` on a free loopback port, opens the page in headless Chromium (Debian's
`chromium`), gives the image to the page's file input as a user would, waits for the ranked
labels and saves a PNG of the whole page. `Chromium`, a small client of the DevTools protocol over
a websocket (websocket-client, in the test extra), is also what the tests drive the page with.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--remote-debugging-port=0"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def line_reader(stream) -> queue.Queue:
    """A queue of a pipe's lines, filled by a thread that keeps draining it (a full pipe would stall
    the process writing it)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in iter(stream.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, pattern: str, timeout: float, what: str) -> re.Match:
    """The first line matching `pattern`; the lines seen so far in the error if it never comes."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{what}: nothing matching {pattern!r} within {timeout:g} s: {''.join(seen)[-2000:]}")
        if line is None:
            raise RuntimeError(f"{what} ended before printing {pattern!r}: {''.join(seen)[-2000:]}")
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match


class Chromium:
    """Headless Chromium over the DevTools protocol: open a page, evaluate JavaScript, give a file
    input its files, collect what the console reports as an error, take a screenshot."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 860, timeout: float = 30):
        import websocket  # websocket-client

        executable = executable or find_chromium()
        if executable is None:
            raise RuntimeError("no chromium found (Debian: apt-get install chromium)")
        self.timeout, self.width, self.height = timeout, width, height
        self.profile = tempfile.mkdtemp(prefix="devise-chromium-")
        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                         f"--window-size={width},{height}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = wait_for_line(line_reader(self.process.stderr), r"DevTools listening on (ws://\S+)", timeout,
                                "chromium")[1]
            self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
            self.next_id, self.session, self.events = 0, None, []
            target = self.command("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.command("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.command(f"{domain}.enable")
            self.command("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                         mobile=False)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def command(self, method: str, **params) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout or self.timeout:g} s: {expression}")
            time.sleep(0.05)

    def open(self, url: str) -> None:
        """Load `url`; what the console reported before is forgotten."""
        self.events.clear()
        self.command("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def set_files(self, selector: str, paths: list[str | Path]) -> None:
        """Give a file input these files, as a user choosing them would (its change event fires)."""
        root = self.command("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.command("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.command("DOM.setFileInputFiles", nodeId=node, files=[str(Path(p).resolve()) for p in paths])

    def drop_files(self, selector: str, paths: list[str | Path]) -> None:
        """Drag files from outside the browser onto the middle of an element and drop them there."""
        box = json.loads(self.evaluate(f"JSON.stringify(document.querySelector({json.dumps(selector)})"
                                       ".getBoundingClientRect())"))
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        data = {"items": [], "files": [str(Path(p).resolve()) for p in paths], "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            self.command("Input.dispatchDragEvent", type=kind, x=x, y=y, data=data)

    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error-level log entries seen so far."""
        self.evaluate("1")  # collect the events already sent
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(f"{params['entry'].get('text')} ({params['entry'].get('url', '')})")
        return errors

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page (the viewport stretched to the page's height)."""
        metrics = self.command("Page.getLayoutMetrics")
        height = max(self.height, math.ceil(metrics.get("cssContentSize", metrics.get("contentSize"))["height"]))
        self.command("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1,
                     mobile=False)
        data = self.command("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.command("Browser.close")
        with contextlib.suppress(Exception):
            self.socket.close()
        if self.process.poll() is None:
            self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.contextmanager
def served(models: list[str | Path], *options: str, timeout: float = 120) -> Iterator[str]:
    """`devise serve MODELS --port 0 OPTIONS` in a subprocess for the life of the block; its URL."""
    process = subprocess.Popen([sys.executable, "-m", "devise", "serve", *map(str, models), "--port", "0",
                                *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line_reader(process.stderr)  # drained, so a chatty server never blocks
        yield wait_for_line(line_reader(process.stdout), r"(http://\S+)", timeout, "devise serve")[1]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


PAGE_SETTLED = "['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"


def rank_in_page(browser: Chromium, url: str, image: str | Path, labels: list[str] | None = None,
                 top: int | None = None) -> str:
    """Open the page, optionally set its labels and top, give it the image; the page's final state."""
    browser.open(url)
    browser.wait_for("document.body.dataset.state === 'ready'")
    if labels is not None:
        browser.evaluate(f"document.getElementById('labels').value = {json.dumps(chr(10).join(labels))}")
    if top is not None:
        browser.evaluate(f"document.getElementById('top').value = {int(top)}")
    browser.set_files("#file", [image])
    return browser.wait_for(PAGE_SETTLED, 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot `devise serve` ranking one image.")
    parser.add_argument("models", nargs="*", help="exported model folders or run folders")
    parser.add_argument("--url", help="a page already served (devise serve ...) instead of MODELS")
    parser.add_argument("--image", required=True, help="the image to rank")
    parser.add_argument("--out", default="docs/serve.png", help="PNG to write (default: docs/serve.png)")
    parser.add_argument("--labels", help="candidate labels file for the page (default: devise serve's)")
    parser.add_argument("--words", type=int, default=1000, help="common words among the default labels")
    parser.add_argument("--top", type=int, default=5, help="labels per model")
    parser.add_argument("--width", type=int, default=1280, help="page width in pixels")
    parser.add_argument("--chromium", help="the browser to use (default: chromium on the PATH)")
    args = parser.parse_args(argv)
    if not Path(args.image).is_file():
        parser.error(f"{args.image}: no such image file")
    if bool(args.models) == bool(args.url):
        parser.error("give MODELS to serve, or the --url of a page already served")
    options = ["--words", str(args.words), "--top", str(args.top), *(["--labels", args.labels] if args.labels else [])]
    server = contextlib.nullcontext(args.url) if args.url else served(args.models, *options)
    with server as url, Chromium(args.chromium, width=args.width, height=760) as browser:
        state = rank_in_page(browser, url, args.image)
        if state != "done":
            error = browser.evaluate("document.getElementById('error').textContent")
            print(f"the page refused the image: {error}", file=sys.stderr)
            return 1
        print(browser.screenshot(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
