"""``kpjax serve``: keypoints over HTTP, and a page that draws them on a photo.

Starlette under uvicorn. The API is one endpoint with a binary body, which
needs routing, a streamed body with a size limit and a start-up hook, not
FastAPI's pydantic models; and FastAPI's docs page loads Swagger UI from a
CDN, which fails offline. So the OpenAPI spec is written out here, from the
model's keypoint names, and ``/docs`` is a page of the package that renders it.

The predictor is compiled before the server answers any request, for every
number of faces up to ``batch`` (the predictor cuts larger counts into calls
of at most ``batch`` faces). Uploads are read into memory up to a size limit
(nothing touches the disk: Starlette's own form parser would spool a file part
over 1 MiB to a temporary file, so multipart bodies are parsed here), decoded
on worker threads, then queued: one task hands all the images waiting, up to
``batch``, to a single predictor call, so concurrent requests share network
calls and the predictor runs on one thread at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import numpy as np

from kpjax import __version__
from kpjax.errors import KpjaxError
from kpjax.image import ImageTooLarge, decode_image
from kpjax.inference import Predictor
from kpjax.records import Face, ImageResult

try:
    import uvicorn
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import File, FormParser, parse_options_header
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as missing:
    raise KpjaxError(f"kpjax serve needs {missing.name}: pip install 'kpjax[serve]'") from None

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 10 << 20
MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo passes; a small PNG that inflates to gigabytes does not
UPLOAD_NAME = "upload"  # the "image" of a raw-bytes upload, which has no file name
# The pages load nothing but their own files: no CDN, no fonts, no analytics.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def warm_up(predictor: Predictor) -> None:
    """Compile the predictor for every face count a call can see (1 .. batch_size)."""
    blank_face = np.zeros((predictor.config.size, predictor.config.size, 3), np.uint8)  # a frame-sized image is a face
    for count in range(1, predictor.batch_size + 1):
        predictor([blank_face] * count)


class InferenceQueue:
    """Serialises predictor calls; the images that arrive while one call runs go together into the next."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.waiting: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()

    async def predict(self, image: np.ndarray) -> list[Face]:
        future = asyncio.get_running_loop().create_future()
        await self.waiting.put((image, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.waiting.get()]
            while len(batch) < self.predictor.batch_size and not self.waiting.empty():
                batch.append(self.waiting.get_nowait())
            batch = [(image, future) for image, future in batch if not future.cancelled()]  # clients gone
            if not batch:
                continue
            try:
                results = await run_in_threadpool(self.predictor, [image for image, _ in batch])
            except Exception as error:  # a bug: these requests get a 500, the server goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), faces in zip(batch, results):
                if not future.done():
                    future.set_result(faces)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole request body, refused with a 413 as soon as it is known to pass ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"request body of {int(declared):,} bytes is over the limit of {max_bytes:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, f"request body is over the limit of {max_bytes:,} bytes")
    return bytes(body)


def multipart_file(body: bytes, content_type: str) -> tuple[str, bytes]:
    """The name and bytes of the first file part of a multipart/form-data body, kept in memory."""
    _, options = parse_options_header(content_type)
    files: list[File] = []
    try:
        # Never spooled to a temporary file: the body's size limit bounds the memory.
        parser = FormParser("multipart/form-data", on_field=None, on_file=files.append,
                            boundary=options.get(b"boundary"), config={"MAX_MEMORY_FILE_SIZE": float("inf")})
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise KpjaxError(f"multipart body: {error}") from None
    if not files:
        raise KpjaxError("multipart body: no file part; send the image as a file field named image")
    return files[0].file_name.decode("utf-8", "replace") or UPLOAD_NAME, files[0].file_object.getvalue()


def error_response(request: Request, error: Exception) -> JSONResponse:
    """Every error as one line of JSON: ``{"error": "..."}``."""
    if isinstance(error, HTTPException):
        return JSONResponse({"error": error.detail}, error.status_code, headers=error.headers)
    return JSONResponse({"error": f"internal error: {type(error).__name__}"}, 500)


def openapi_spec(names: tuple[str, ...], max_bytes: int) -> dict:
    """The API's OpenAPI 3.1 description; the keypoints object lists the model's own keypoint names."""

    def json_body(schema: str, description: str) -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}

    binary = {"type": "string", "format": "binary"}
    numbers = {"type": "array", "items": {"type": "number"}}
    upload = {
        "required": True,
        "description": f"An image file (PNG, JPEG, ...) of at most {max_bytes:,} bytes and {MAX_PIXELS:,} pixels, "
                       "as the body itself or as the file field of a form",
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                                       "properties": {"image": binary}}},
                    "image/*": {"schema": binary}, "application/octet-stream": {"schema": binary}},
    }
    keypoints = {
        "summary": "Every face's box, detector score and keypoints in one image",
        "requestBody": upload,
        "responses": {
            "200": json_body("ImageResult", "The faces found (none is not an error)"),
            "400": json_body("Error", "Empty body, not an image, or a malformed form"),
            "413": json_body("Error", f"Body over {max_bytes:,} bytes or image over {MAX_PIXELS:,} pixels"),
        },
    }
    schemas = {
        "ImageResult": {"type": "object", "required": ["image", "width", "height", "overlay", "faces"], "properties": {
            "image": {"type": "string", "description": f"the upload's file name, or {UPLOAD_NAME!r}"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "overlay": {"type": "string", "description": "always empty: the server writes no file"},
            "faces": {"type": "array", "items": {"$ref": "#/components/schemas/Face"}}}},
        "Face": {"type": "object", "required": ["box", "score", "keypoints"], "properties": {
            "box": numbers | {"minItems": 4, "maxItems": 4, "description": "x, y, width, height in pixels"},
            "score": {"type": ["number", "null"], "description": "the face detector's score"},
            "expected_nme": {"type": ["number", "null"], "description": (
                "the face's quality score: the NME (RMSE of the points over the outer-eye distance) its keypoints are "
                "expected to have; null for a model without an error head")},
            "keypoints": {"type": "object", "required": list(names),
                          "properties": {name: {"$ref": "#/components/schemas/Point"} for name in names}},
            "errors": {"type": ["object", "null"], "description": "each keypoint's expected error, pixels",
                       "properties": {name: {"type": "number"} for name in names}}}},
        "Point": numbers | {"minItems": 2, "maxItems": 2,
                            "description": "x, y in the image's pixels (pixel centres at integers)"},
        "Health": {"type": "object", "properties": {
            "status": {"const": "ok"}, "model": {"type": "string"}, "keypoints": {"type": "integer"},
            "batch": {"type": "integer"}, "max_upload_bytes": {"type": "integer"}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
                  "description": "one line"},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "kpjax", "version": __version__, "description": (
            "Facial keypoints of every face in a photo. The response is one element of the predictions.json that "
            "`kpjax predict` writes.\n\n"
            "curl -F image=@photo.jpg http://127.0.0.1:8000/v1/keypoints\n"
            "curl --data-binary @photo.jpg http://127.0.0.1:8000/v1/keypoints")},
        "paths": {
            "/v1/keypoints": {"post": keypoints},
            "/healthz": {"get": {"summary": "The server is up and its model compiled",
                                 "responses": {"200": json_body("Health", "ok")}}},
        },
        "components": {"schemas": schemas},
    }


def create_app(predictor: Predictor, model_name: str, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Starlette:
    """The ASGI app; compiles the predictor first, so its first request is as fast as any other."""
    warm_up(predictor)
    names = predictor.layout.names
    spec = openapi_spec(names, max_upload_bytes)
    health = {"status": "ok", "model": model_name, "keypoints": len(names), "batch": predictor.batch_size,
              "max_upload_bytes": max_upload_bytes}

    async def keypoints(request: Request) -> JSONResponse:
        body = await read_body(request, max_upload_bytes)
        if not body:
            raise HTTPException(400, "empty request body: send an image, raw or as the file field of a form")
        try:
            name, data = UPLOAD_NAME, body
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                name, data = multipart_file(body, content_type)
            image = await run_in_threadpool(decode_image, data, name, MAX_PIXELS)
        except ImageTooLarge as error:
            raise HTTPException(413, str(error)) from None
        except KpjaxError as error:
            raise HTTPException(400, str(error)) from None
        faces = await request.app.state.inference.predict(image)
        return JSONResponse(ImageResult(name, faces, image.shape[1], image.shape[0]).to_json(names))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.inference = InferenceQueue(predictor)
        worker = asyncio.create_task(app.state.inference.run())
        yield
        worker.cancel()

    return Starlette(
        routes=[
            Route("/", lambda _: FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)),
            Route("/docs", lambda _: FileResponse(STATIC / "docs.html", headers=PAGE_HEADERS)),
            Route("/openapi.json", lambda _: JSONResponse(spec)),
            Route("/healthz", lambda _: JSONResponse(health)),
            Route("/v1/keypoints", keypoints, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: error_response, Exception: error_response},
        lifespan=lifespan,
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, opened before the model is compiled: a busy port is a one-line error at once, and
    clients that connect while the server starts wait in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise KpjaxError(f"--host {host} --port {port}: cannot listen there ({error.strerror})") from None
    return sock


def serve(predictor: Predictor, model_name: str, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = MAX_UPLOAD_BYTES, echo=print) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    sock = listen(host, port)
    started = time.perf_counter()
    app = create_app(predictor, model_name, max_upload_bytes)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    echo(f"kpjax serve: model {model_name}, compiled for 1-{predictor.batch_size} faces per call in "
         f"{time.perf_counter() - started:.1f}s; open http://{url_host}:{bound_port}/")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn has shut down cleanly and re-raises the Ctrl-C
        server.run(sockets=[sock])
