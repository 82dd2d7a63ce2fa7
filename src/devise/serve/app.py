"""`devise serve`: a local page and a JSON endpoint to try models on your own images.

One FastAPI app (on Starlette, served by uvicorn) over `DeviseModel`s: DeViSE for an embedding
model, ConSE for a softmax one, side by side. The page is `page.html`, self-contained (nothing
loaded from the web; every text enters the DOM as text). Uploads are bounded in bytes and pixels
and decoded off the event loop, at most `MAX_DECODES` at once (the others wait their turn, at most
`MAX_UPLOADS` held in all), so the server's memory does not follow the requests; every refusal is
one JSON line with its status.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations (`Request`,
# imported inside `create_app` so that fastapi stays an optional extra) as live objects.
import asyncio
import logging
import math
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from devise.data.sources import ImageTooLarge, decode_squares
from devise.errors import DeviseError, read_text_file
from devise.hardware import glibc
from devise.labels.vocabulary import Vocabulary, unique_labels
from devise.model.export import load
from devise.model.inference import METHODS, DeviseModel

MAX_UPLOAD_MB = 10
LABEL_TEXT_BYTES = 1 << 20  # the labels field may hold this much text beside the image
MAX_LABELS = 20000
MAX_TOP = 100
MAX_DECODES = 2  # uploads decoded at once; the others wait their turn, so memory is that of two
MAX_UPLOADS = 32  # uploads held at once (read, waiting or decoding), each at most --max-mb: one more is a 503
COMMON_WORDS = 1000
# The page: one self-contained file of HTML and script (no file, font or script from anywhere else;
# every text from the server or the user enters the DOM through textContent).
PAGE = (resources.files("devise.serve") / "page.html").read_text(encoding="utf-8")
# A few small public-domain photographs the empty page offers to try (examples/LICENSE.txt says whose).
EXAMPLES = {path.name: path.read_bytes() for path in sorted(resources.files("devise.serve").joinpath("examples").iterdir())
            if path.name.endswith(".jpg")}
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'")

log = logging.getLogger(__name__)


@dataclass
class Panel:
    """One ranked list on the page: a model and the method it ranks candidate labels by."""

    name: str  # what the page calls it: "DeViSE", "ConSE", or with the model's name when several share one
    model: DeviseModel
    method: str
    source: str  # the folder it was loaded from


class Service:
    """The models being served and what the page offers by default; classifies one image at a time
    (a lock: torch is already parallel inside, and memory stays that of one request)."""

    def __init__(self, models: dict[str, DeviseModel], default_labels: list[str], max_bytes: int, top: int = 5):
        self.panels = panels_for(models)
        self.default_labels = default_labels
        self.max_bytes = max_bytes
        self.top = top
        self.lock = threading.Lock()
        self.cache: dict[tuple[int, tuple[str, ...]], Vocabulary] = {}  # the label vectors of recent requests

    def info(self) -> dict:
        """What the page shows before any image: models, methods, default labels, limits, caveats."""
        return {"panels": [{"name": p.name, "method": METHODS[p.method], "model": p.source,
                            "label_space": p.model.label_space_name, "image_size": p.model.image_size,
                            "training_labels": len(p.model.labels)} for p in self.panels],
                "labels": self.default_labels, "top": self.top, "max_bytes": self.max_bytes,
                "max_labels": MAX_LABELS, "notes": self.notes(), "examples": list(EXAMPLES)}

    def notes(self) -> list[str]:
        """Honest lines about what is not available with the models served."""
        methods = {p.method for p in self.panels}
        notes = []
        if "conse" not in methods:
            notes.append("ConSE needs a softmax model: serve one beside this model to compare "
                         "(devise serve RUN_OR_MODEL SOFTMAX_RUN_OR_MODEL).")
        if "devise" not in methods:
            notes.append("DeViSE needs an embedding model: serve one beside this softmax model to compare.")
        return notes

    def decode(self, data: bytes, where: str) -> list[np.ndarray]:
        """The upload as each panel's model takes it (its square, as `devise.load(...).classify` cuts
        it from a file), decoded once; the memory the decode freed goes back to the system."""
        squares = [(p.model.preprocess.resize or p.model.image_size, p.model.preprocess.interpolation)
                   for p in self.panels]
        wanted = list(dict.fromkeys(squares))
        try:
            decoded = dict(zip(wanted, decode_squares(data, wanted, where)))
        finally:
            give_back_freed_memory()
        return [decoded[square] for square in squares]

    def classify(self, images: list[np.ndarray], filename: str, labels: list[str], top: int) -> dict:
        """Every panel's top labels for one image, decoded for each panel by `decode`, as the JSON
        the page and scripts read."""
        with self.lock:
            results = [{"name": p.name, "method": METHODS[p.method], "model": p.source,
                        "labels": [{"label": label, "score": round(score, 5)} for label, score in
                                   p.model.classify([images[i]], self.candidates(i, labels), top=top,
                                                    method=p.method)[0]]}
                       for i, p in enumerate(self.panels)]
        return {"image": filename, "candidates": len(labels), "top": top, "results": results}

    def candidates(self, panel: int, labels: list[str]) -> Vocabulary:
        """The labels with their vectors in one panel's space, kept for the next few requests: the
        page sends the same thousand labels with every image."""
        key = (panel, tuple(labels))
        if key not in self.cache:
            if len(self.cache) >= 4 * len(self.panels):
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = Vocabulary(list(labels), self.panels[panel].model.encode_text(labels), "page")
        return self.cache[key]


def give_back_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's `malloc_trim`; elsewhere nothing):
    the buffers of a large decode, once freed, otherwise stay in the server's resident memory."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def panels_for(models: dict[str, DeviseModel]) -> list[Panel]:
    """DeViSE for each embedding model, ConSE for each softmax model; the model's name is added to
    a panel's when two panels would share a name."""
    chosen = [(source, model, "devise" if model.kind == "embedding" else "conse") for source, model in models.items()]
    counts = {method: sum(m == method for _, _, m in chosen) for _, _, method in chosen}
    return [Panel(METHODS[method] + (f" ({source})" if counts[method] > 1 else ""), model, method, source)
            for source, model, method in chosen]


def default_labels(models: list[DeviseModel], words: int, labels_file: str | None = None) -> list[str]:
    """The page's starting candidates: a file's lines if given, else every model's training labels and
    then the label space's `words` most common nouns (none for a sentence encoder), as a set."""
    if labels_file:
        labels = [line.strip() for line in read_text_file(labels_file, "labels file").splitlines()
                  if line.strip() and not line.startswith("#")]
        if not labels:
            raise DeviseError(f"{labels_file} holds no labels")
        return unique_labels(labels)
    labels = [label for model in models for label in model.labels]
    if words:
        labels += next((found for found in (model.common_words(words) for model in models) if found), [])
    return unique_labels(labels)


def parse_labels(text, default: list[str]) -> list[str]:
    """The labels field: one label a line (a label may be a comma-separated synonym list)."""
    if text is not None and not isinstance(text, str):
        raise DeviseError("labels must be a text field, one label a line, not a file")
    if text is None or not text.strip():
        return default
    labels = unique_labels(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) > MAX_LABELS:
        raise DeviseError(f"{len(labels)} labels; at most {MAX_LABELS} a request")
    return labels


def parse_top(text, default: int) -> int:
    """The top field: how many labels each panel lists."""
    if not isinstance(text, (str, int, type(None))):
        raise DeviseError("top must be a text field holding a whole number")
    if text is None or not str(text).strip():
        return default
    try:
        top = int(str(text).strip())
    except ValueError:
        raise DeviseError(f"top must be a whole number, not {str(text)[:20]!r}") from None
    if not 1 <= top <= MAX_TOP:
        raise DeviseError(f"top must be between 1 and {MAX_TOP}, not {top}")
    return top


# ---------------------------------------------------------------------------------------------
# The web app


def create_app(service: Service, *, max_uploads: int = MAX_UPLOADS):
    """The FastAPI app: the page at /, /api/info and /api/classify. At most `max_uploads` uploads
    are held at once: the bytes waiting for a decode are bounded too, and one more gets a 503."""
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="devise", docs_url=None, redoc_url=None, openapi_url=None)
    decoding = asyncio.Semaphore(MAX_DECODES)  # waiting requests hold no thread, only their bytes

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    @app.get("/api/info")
    def info() -> dict:
        return service.info()

    @app.get("/examples/{name}")
    def example(name: str) -> Response:
        if name not in EXAMPLES:
            return refuse(404, f"no example image {name!r}; there are {', '.join(EXAMPLES)}")
        return Response(EXAMPLES[name], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    held = 0  # uploads in this server now; the event loop is one thread, so a plain count will do

    @app.post("/api/classify")
    async def classify(request: Request):
        nonlocal held
        if held >= max_uploads:
            return JSONResponse({"error": f"the server is busy with {held} images; try again in a moment"},
                                status_code=503, headers={"Retry-After": "1"})
        held += 1
        try:
            return await answer(request)
        finally:
            held -= 1

    async def answer(request: Request):
        body = await read_body(request, service.max_bytes + LABEL_TEXT_BYTES)
        if body is None:
            return refuse(413, f"the upload is over the {service.max_bytes / 1e6:g} MB limit; send a smaller image")
        form = await parse_form(request, body)
        if isinstance(form, str):
            return refuse(400, form)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return refuse(400, "no image: send the file in a multipart field named 'image'")
        data = await upload.read()
        if len(data) > service.max_bytes:
            return refuse(413, f"{upload.filename or 'the image'} is {len(data) / 1e6:.1f} MB, over the "
                               f"{service.max_bytes / 1e6:g} MB limit")
        try:
            labels = parse_labels(form.get("labels"), service.default_labels)
            top = parse_top(form.get("top"), service.top)
        except DeviseError as error:
            return refuse(400, str(error))
        try:  # decoding and ranking run in a worker thread: the server keeps answering meanwhile
            async with decoding:
                images = await run_in_threadpool(service.decode, data, upload.filename or "the upload")
        except ImageTooLarge as error:
            return refuse(413, f"{error}; send a smaller image")
        except DeviseError as error:
            return refuse(415, f"{error}; send a JPEG, PNG, GIF, BMP or WebP image")
        try:
            return await run_in_threadpool(service.classify, images, upload.filename or "", labels, top)
        except DeviseError as error:
            return refuse(400, str(error))

    return app


async def read_body(request, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes. An oversized body is still read to
    its end (and dropped, chunk by chunk) so the client gets the 413 rather than a broken pipe."""
    declared = request.headers.get("content-length", "")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit and not (declared.isdigit() and int(declared) > limit):
            chunks.append(chunk)
    return b"".join(chunks) if size <= limit else None


async def parse_form(request, body: bytes):
    """The multipart form of a body already read (so its size was checked first), or an error line."""
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return "send a multipart/form-data body with the image in a field named 'image'"
    try:
        return await Request(request.scope, replay).form(max_files=1, max_fields=8, max_part_size=LABEL_TEXT_BYTES)
    except (MultiPartException, HTTPException, ValueError) as error:  # starlette raises HTTPException(400)
        return f"not a readable multipart form ({getattr(error, 'detail', error)})"


# ---------------------------------------------------------------------------------------------
# Listening


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on (host, port): port 0 picks a free one; one line if it cannot."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        raise DeviseError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(paths: list[str], *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          words: int = COMMON_WORDS, labels_file: str | None = None, max_mb: float = MAX_UPLOAD_MB,
          top: int = 5, precision: str = "float32") -> None:
    """`devise serve`: load the models, listen, print the URL (one line), serve until interrupted."""
    uvicorn = web_packages()
    if not (math.isfinite(max_mb) and max_mb > 0):
        raise DeviseError(f"--max-mb must be positive, not {max_mb:g}")
    if words < 0:
        raise DeviseError(f"--words must be 0 or more, not {words}")
    parse_top(str(top), top)
    models = {}
    for path in paths:
        name = Path(path).resolve().name
        models[name if name not in models else str(path)] = load(path, device, precision=precision)
    service = Service(models, default_labels(list(models.values()), words, labels_file), int(max_mb * 1e6), top)
    sock = listening_socket(host, port)
    if not ipaddress_is_loopback(sock.getsockname()[0]):
        log.warning(f"warning: listening on {host}: anyone who can reach this machine can use the page")
    served = ", ".join(f"{p.name} ({p.source})" if p.source not in p.name else p.name for p in service.panels)
    print(f"devise: serving {served} on {url_of(sock)}", flush=True)
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def web_packages():
    """uvicorn (and with it FastAPI), or one line naming the extra that brings them."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (FastAPI's form parser)
        import uvicorn
    except ImportError as error:
        raise DeviseError(f'devise serve needs the serve extra: pip install "devise[serve]" ({error})') from None
    return uvicorn


def ipaddress_is_loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address.split("%")[0]).is_loopback
