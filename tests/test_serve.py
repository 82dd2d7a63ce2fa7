"""`devise serve` in a real browser: headless Chromium opens the page, is given a toy image through
its file input, and shows DeViSE's and ConSE's ranked labels with no console error; corrupt and
oversized files get a clear refusal in the page and from the JSON endpoint; label text stays text."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import devise
from devise.cli import main
from devise.data import load_dataset
from devise.model.export import export

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("screenshot_serve", REPO / "tools" / "screenshot_serve.py")
screenshot_serve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(screenshot_serve)
CHROMIUM = screenshot_serve.find_chromium()
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")

RESULTS = """JSON.stringify(Array.from(document.querySelectorAll('#results .panel')).map((panel) => ({
  method: panel.dataset.method,
  labels: Array.from(panel.querySelectorAll('.label')).map((e) => e.textContent),
  scores: Array.from(panel.querySelectorAll('.score')).map((e) => Number(e.textContent)),
  bars: Array.from(panel.querySelectorAll('.bar')).map((e) => e.style.width)})))"""


@pytest.fixture(scope="module")
def served_models(toy_runs, tmp_path_factory) -> list[Path]:
    """The DeViSE run folder as it is, and the softmax run exported: both ways of being served."""
    return [toy_runs["devise"], export(toy_runs["softmax"], tmp_path_factory.mktemp("served") / "softmax-model")]


@pytest.fixture(scope="module")
def server(served_models):
    with screenshot_serve.served(served_models, "--words", "0") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("websocket", reason="websocket-client drives Chromium (the test extra)")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with screenshot_serve.Chromium(CHROMIUM) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def toy_image(toy_runs, tmp_path_factory) -> tuple[Path, str, list[tuple[str, float]]]:
    """A toy validation image whose true label DeViSE ranks in its top 5 among the training labels
    (the page's default candidates here), with that ranking as the Python API gives it."""
    model = devise.load(toy_runs["devise"], device="cpu")
    val = load_dataset("toy", split="val", image_size=16)
    folder = tmp_path_factory.mktemp("images")
    for i in range(0, len(val), 9):
        path = folder / f"val_{i}.png"
        Image.fromarray(val.images[i].permute(1, 2, 0).numpy()).save(path)
        ranked = model.classify([path], top=5)[0]
        truth = val.class_names[val.labels[i]]
        if truth in [label for label, _ in ranked]:
            return path, truth, ranked
    pytest.fail("the toy DeViSE run ranks no validation image's label in its top 5")


def post(url: str, fields: dict[str, str], image: tuple[str, bytes] | None = None,
         content_type: str | None = None) -> tuple[int, dict]:
    """POST a multipart form to /api/classify as a script would; (status, JSON body)."""
    boundary = "devise-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image[0]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + image[1] + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "api/classify", data=body, headers={
        "Content-Type": content_type or f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@needs_browser
def test_the_page_ranks_an_uploaded_image_with_devise_and_conse_side_by_side(server, browser, toy_image):
    path, truth, ranked = toy_image
    assert server.startswith("http://127.0.0.1:"), "loopback unless told otherwise"
    assert screenshot_serve.rank_in_page(browser, server, path) == "done"
    devise_panel, conse_panel = json.loads(browser.evaluate(RESULTS))
    assert (devise_panel["method"], conse_panel["method"]) == ("DeViSE", "ConSE")
    assert truth in devise_panel["labels"]
    assert devise_panel["labels"] == [label for label, _ in ranked], "the page ranks as devise.load(...).classify"
    assert devise_panel["scores"] == [round(score, 3) for _, score in ranked]
    assert len(conse_panel["labels"]) == 5 and all(bar.endswith("%") for bar in devise_panel["bars"])
    assert browser.console_errors() == []


@needs_browser
def test_an_image_dropped_on_the_page_is_ranked_too(server, browser, toy_image):
    path, truth, ranked = toy_image
    browser.open(server)
    browser.wait_for("document.body.dataset.state === 'ready'")
    browser.drop_files("#drop", [path])
    assert browser.wait_for(screenshot_serve.PAGE_SETTLED, 60) == "done"
    devise_panel, _ = json.loads(browser.evaluate(RESULTS))
    assert devise_panel["labels"] == [label for label, _ in ranked]
    assert browser.console_errors() == []


@needs_browser
def test_the_empty_page_offers_example_photographs_and_one_click_ranks_one(server, browser):
    browser.open(server)
    browser.wait_for("document.body.dataset.state === 'ready'")
    browser.wait_for("document.querySelectorAll('#examples img').length === 4")
    assert browser.evaluate("getComputedStyle(document.getElementById('examples')).display") != "none"
    assert browser.evaluate("Array.from(document.querySelectorAll('#examples img')).every((i) => i.naturalWidth > 0)")
    browser.evaluate("document.querySelector('#examples button[title=\"cat.jpg\"]').click()")
    assert browser.wait_for(screenshot_serve.PAGE_SETTLED, 60) == "done"
    assert browser.evaluate("document.getElementById('hint').textContent") == "cat.jpg"
    assert len(json.loads(browser.evaluate(RESULTS))[0]["labels"]) == 5
    assert browser.evaluate("getComputedStyle(document.getElementById('examples')).display") == "none"
    assert browser.console_errors() == []


def test_example_images_are_served_by_name_only(server):
    with urllib.request.urlopen(server + "examples/cat.jpg", timeout=30) as response:
        assert response.headers["Content-Type"] == "image/jpeg" and response.read(3) == b"\xff\xd8\xff"
    for name in ("nothing.jpg", "..%2F..%2Fpage.html", "LICENSE.txt"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server + "examples/" + name, timeout=30)
        assert refused.value.code == 404


@needs_browser
def test_the_page_shows_label_text_as_text(server, browser, toy_image):
    path, truth, _ = toy_image
    labels = ["<b> red </b>", "<script>", truth]
    assert screenshot_serve.rank_in_page(browser, server, path, labels=labels, top=3) == "done"
    devise_panel, _ = json.loads(browser.evaluate(RESULTS))
    assert sorted(devise_panel["labels"]) == sorted(labels)
    assert browser.evaluate("document.querySelectorAll('#results b, #results script').length") == 0
    assert browser.console_errors() == []


@needs_browser
def test_the_page_refuses_a_corrupt_file_and_a_50_mb_file_with_a_clear_message(server, browser, tmp_path):
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    assert screenshot_serve.rank_in_page(browser, server, corrupt) == "error"
    message = browser.evaluate("document.getElementById('error').textContent")
    assert message.startswith("photo.jpg is not a readable image") and "send a JPEG, PNG" in message

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG" + bytes(50_000_000))
    assert screenshot_serve.rank_in_page(browser, server, huge) == "error"
    assert browser.evaluate("document.getElementById('error').textContent") == \
        "huge.png is 50.0 MB, over the 10 MB limit."
    assert browser.evaluate("document.querySelectorAll('#results .panel').length") == 0


def test_the_json_endpoint_ranks_for_scripts_and_refuses_bad_uploads(server, toy_image):
    path, truth, ranked = toy_image
    status, body = post(server, {"labels": "\n".join([truth, "tiger", "fire truck"]), "top": "2"},
                        (path.name, path.read_bytes()))
    assert status == 200 and [r["method"] for r in body["results"]] == ["DeViSE", "ConSE"]
    assert body["candidates"] == 3 and all(len(r["labels"]) == 2 for r in body["results"])

    refusals = [
        (post(server, {}, ("notes.png", b"hello, not an image")), 415, "notes.png is not a readable image"),
        (post(server, {}, ("huge.jpg", bytes(50_000_000))), 413, "over the 10 MB limit"),
        (post(server, {"labels": "tiger"}), 400, "no image"),
        (post(server, {"labels": "tiger\nqzxqzx"}, (path.name, path.read_bytes())), 400, "no vector in glove-6b-50d"),
        (post(server, {"top": "many"}, (path.name, path.read_bytes())), 400, "top must be a whole number"),
        (post(server, {}, None, content_type="application/json"), 400, "multipart/form-data"),
    ]
    for (status, body), expected_status, fragment in refusals:
        assert status == expected_status and fragment in body["error"], body

    status, body = post(server, {}, (path.name, path.read_bytes()))
    assert status == 200, "still serving after every refusal"
    assert [entry["label"] for entry in body["results"][0]["labels"]] == [label for label, _ in ranked]


def test_the_page_is_self_contained_and_says_so(server):
    with urllib.request.urlopen(server, timeout=30) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "http://" not in page and "https://" not in page, "nothing from the web"
    assert "default-src 'none'" in policy and "innerHTML" not in page
    with urllib.request.urlopen(server + "api/info", timeout=30) as response:
        info = json.loads(response.read())
    assert info["max_bytes"] == 10_000_000 and len(info["labels"]) == 40
    assert info["notes"] == [], "DeViSE and ConSE are both there: nothing missing to explain"


def test_default_labels_are_the_training_labels_then_common_nouns(served_models, tmp_path):
    from devise.serve.app import Service, default_labels

    models = [devise.load(folder, device="cpu") for folder in served_models]
    labels = default_labels(models, 50)
    assert labels[:40] == models[0].labels and len(labels) == 90 and "year" in labels and "the" not in labels
    (tmp_path / "labels.txt").write_text("# mine\ntiger\n\nlion\nTiger\n")
    assert default_labels(models, 50, str(tmp_path / "labels.txt")) == ["tiger", "lion"]
    alone = Service({"devise": models[0]}, labels, 10_000_000)
    assert "ConSE needs a softmax model" in alone.info()["notes"][0], "honest about what one model cannot do"


def test_serve_says_how_to_use_it(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert exit.value.code == 0 and all(flag in text for flag in ("--host", "--port", "--labels", "--max-mb"))


def test_serve_mistakes_are_one_clear_line(toy_runs, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"devise: error: {tmp_path / 'nowhere'}: no such model folder, nor a pretrained model devise knows (efficientnet-lite0)"]
    assert main(["serve", str(toy_runs["devise"]), "--max-mb", "0"]) == 2
    assert "--max-mb must be positive" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(toy_runs["devise"]), "--port", str(port), "--words", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"devise: error: cannot listen on 127.0.0.1:{port}")


@needs_browser
def test_the_screenshot_tool_saves_the_ranked_page(server, toy_image, tmp_path):
    pytest.importorskip("websocket", reason="websocket-client drives Chromium (the test extra)")
    out = tmp_path / "serve.png"
    assert screenshot_serve.main(["--url", server, "--image", str(toy_image[0]), "--out", str(out)]) == 0
    with Image.open(out) as shot:
        assert shot.format == "PNG" and shot.width == 1280 and shot.height >= 600


# ---------------------------------------------------------------------------------------------
# Bounded memory: whatever shape, depth or number of uploads, the server's memory comes back


def greyscale_png(width: int, height: int, row: bytes, bit_depth: int = 8) -> bytes:
    """A greyscale PNG whose every row is `row`, written directly: a few kilobytes that decode to as
    many pixels as the header says (PIL would hold them all to write it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" + row + (b"\2" + bytes(len(row))) * (height - 1))  # 2: each row as the one above
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@contextlib.contextmanager
def served_process(models: list[Path]):
    """`devise serve MODELS` in a subprocess: (its URL, its process id)."""
    process = subprocess.Popen([sys.executable, "-m", "devise", "serve", *map(str, models), "--port", "0",
                                "--words", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:  # its errors on stdout too, so that a server that fails to start says why
        url = screenshot_serve.wait_for_line(screenshot_serve.line_reader(process.stdout), r"(http://\S+)", 120,
                                             "devise serve")[1]
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the server's memory from /proc")
def test_the_servers_memory_comes_back_after_strips_bombs_and_eight_large_16_bit_images(served_models, toy_image):
    gradient = np.linspace(0, 65535, 6300).astype(">u2").tobytes()
    large = greyscale_png(6300, 6300, gradient, bit_depth=16)  # 39.7 megapixels, within the limit of 40
    uploads = {  # name: (bytes, the status expected)
        "strip.png": (greyscale_png(39_000_000, 1, bytes(39_000_000)), 200),
        "short-strip.png": (greyscale_png(300_000, 1, bytes(300_000)), 200),
        "long-strip.png": (greyscale_png(41_000_000, 1, bytes(41_000_000)), 413),
        "bomb.png": (greyscale_png(20_000, 20_000, bytes(2500), bit_depth=1), 413),
    }
    assert all(len(data) < 100_000 for data, _ in uploads.values()) and len(large) < 200_000
    with served_process(served_models) as (url, pid):
        assert post(url, {}, (toy_image[0].name, toy_image[0].read_bytes()))[0] == 200
        before = resident_mb(pid)
        for name, (data, expected) in uploads.items():
            status, body = post(url, {}, (name, data))
            assert status == expected, (name, body)
            assert status == 200 or ("above devise's limit of 40 megapixels" in body["error"]
                                     and "\n" not in body["error"]), body
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(url, {}, (f"large-{i}.png", large)), range(8)))
        assert [status for status, _ in answers] == [200] * 8, [body for _, body in answers]
        after = resident_mb(pid)
    assert after - before < 200, f"{before:.0f} MB before, {after:.0f} MB after"


class SlowDecodes:
    """A stand-in for the models served, whose decode takes a while and counts how many run at once."""

    max_bytes, default_labels, top = 10_000_000, ["tiger"], 5

    def __init__(self, seconds: float = 0.5):
        self.running = self.most = 0
        self.seconds = seconds
        self.lock = threading.Lock()

    def decode(self, data: bytes, where: str) -> list:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return []

    def classify(self, images: list, filename: str, labels: list[str], top: int) -> dict:
        return {"image": filename}


@contextlib.contextmanager
def app_served(app):
    """`app` served by uvicorn in a thread on a free loopback port, for the length of the block: its URL."""
    import uvicorn

    from devise.serve.app import listening_socket, url_of

    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(30)


def post_at_once(url: str, image: Path, count: int) -> list[tuple[int, dict]]:
    """`count` uploads of `image` sent together, as many clients would."""
    upload = (image.name, image.read_bytes())
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: post(url, {}, upload), range(count)))


def test_at_most_two_uploads_are_decoded_at_once_and_the_others_wait_their_turn(toy_image):
    from devise.serve.app import MAX_DECODES, create_app

    service = SlowDecodes()
    with app_served(create_app(service)) as url:
        answers = post_at_once(url, toy_image[0], 6)
    assert [status for status, _ in answers] == [200] * 6, "every upload answered, none refused"
    assert service.most == MAX_DECODES == 2


def test_an_upload_past_the_servers_limit_is_a_503_and_the_others_are_answered(toy_image):
    from devise.serve.app import create_app

    with app_served(create_app(SlowDecodes(seconds=2), max_uploads=3)) as url:
        answers = post_at_once(url, toy_image[0], 6)
        later = post(url, {}, (toy_image[0].name, toy_image[0].read_bytes()))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 3 + [503] * 3, "three held (two decoding, one waiting), three turned away"
    assert all("busy" in body["error"] for status, body in answers if status == 503)
    assert later[0] == 200, "the server answers again once it has room"
