"""``kpjax serve``: the HTTP API on a real loopback port, the CLI end to end, and the page in headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax.monitoring
import numpy as np
import pytest
import skimage.data
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'kpjax[serve]'")
import uvicorn  # noqa: E402

from kpjax import serve  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import FaceDetector  # noqa: E402
from kpjax.keypoints import KAGGLE_NAMES  # noqa: E402
from kpjax.inference import Predictor  # noqa: E402
from kpjax.predict import predict_paths  # noqa: E402

BATCH = 4
MAX_UPLOAD = 256 << 10
ASTRONAUT_FACE = (170, 55, 110, 115)  # x, y, w, h: where the astronaut's keypoints must fall (as in test_predict)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a drawn webcam, allowed
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class GatedPredictor(Predictor):
    """A predictor that records the images of each call, holds calls back while ``gate`` is clear, and raises
    ``failure`` when one is set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []
        self.failure: Exception | None = None

    def __call__(self, images):
        self.calls.append(len(images))
        self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return super().__call__(images)


@pytest.fixture(scope="module")
def predictor() -> GatedPredictor:
    model, config = load_model()
    return GatedPredictor(model, config, FaceDetector(), batch_size=BATCH)


@pytest.fixture(scope="module")
def server(predictor):
    """The app under uvicorn on a free loopback port, in a thread of this process (where its compilations can be
    counted)."""
    app = serve.create_app(predictor, "default", max_upload_bytes=MAX_UPLOAD)
    sock = serve.listen("127.0.0.1", 0)
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.started, "uvicorn did not start"
    yield {"app": app, "port": sock.getsockname()[1], "url": f"http://127.0.0.1:{sock.getsockname()[1]}/"}
    runner.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=90)
    assert len(buffer.getvalue()) < MAX_UPLOAD
    return buffer.getvalue()


def request(port: int, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Status, headers and raw body of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post_image(port: int, data: bytes, content_type: str = "image/jpeg") -> tuple[int, dict]:
    status, _, body = request(port, "POST", "/v1/keypoints", data, {"Content-Type": content_type})
    return status, json.loads(body)


def multipart(field: str, filename: str | None, data: bytes) -> tuple[bytes, str]:
    boundary = "kpjax-test-boundary"
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
            .encode() + data + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def assert_on_the_face(keypoints: dict) -> None:
    x, y, w, h = ASTRONAUT_FACE
    assert list(keypoints) == list(KAGGLE_NAMES)
    for px, py in keypoints.values():
        assert x < px < x + w and y < py < y + h


def test_keypoints_match_kpjax_predict(server, astronaut_jpeg, predictor, tmp_path):
    """Raw bytes and a multipart form give the record that ``kpjax predict`` writes to predictions.json."""
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    predict_paths(predictor, [photo], tmp_path / "out", progress=False, echo=lambda _: None)
    (expected,) = json.loads((tmp_path / "out" / "predictions.json").read_text())

    status, raw = post_image(server["port"], astronaut_jpeg)
    assert status == 200
    assert raw == expected | {"image": "upload", "overlay": ""}
    assert len(raw["faces"]) == 1 and raw["faces"][0]["score"] > 0 and raw["faces"][0]["expected_nme"] > 0
    assert_on_the_face(raw["faces"][0]["keypoints"])

    status, form = post_image(server["port"], *multipart("image", "astronaut.jpg", astronaut_jpeg))
    assert status == 200
    assert form == expected | {"image": "astronaut.jpg", "overlay": ""}


def test_health_openapi_and_pages(server):
    status, headers, body = request(server["port"], "GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "model": "default", "keypoints": 15, "batch": BATCH,
                                                  "max_upload_bytes": MAX_UPLOAD}
    status, _, body = request(server["port"], "GET", "/openapi.json")
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/v1/keypoints", "/healthz"}
    assert spec["components"]["schemas"]["Face"]["properties"]["keypoints"]["required"] == list(KAGGLE_NAMES)
    for page in ("/", "/docs"):
        status, headers, body = request(server["port"], "GET", page)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in headers["content-security-policy"]
        assert b"http://" not in body and b"https://" not in body  # nothing from the internet
    status, headers, _ = request(server["port"], "GET", "/static/app.js")
    assert status == 200 and "javascript" in headers["content-type"]


def assert_error(status: int, body: bytes, expected_status: int, message: str) -> None:
    assert status == expected_status
    assert body.count(b"\n") == 0
    error = json.loads(body)
    assert list(error) == ["error"] and message in error["error"], error


def test_bad_input_is_a_4xx_with_a_one_line_json_error(server, astronaut_jpeg, monkeypatch):
    port = server["port"]
    cases = [
        ((b"",), 400, "empty request body"),
        ((b"not an image at all",), 400, "upload: unreadable image (not an image format Pillow reads)"),
        ((astronaut_jpeg[: len(astronaut_jpeg) // 2],), 400, "upload: unreadable image ("),
        (multipart("note", None, b"hello"), 400, "multipart body: no file part"),
        (multipart("image", "notes.txt", b"hello"), 400, "notes.txt: unreadable image"),
        ((b"--x\r\nbroken", "multipart/form-data"), 400, "multipart body:"),
    ]
    for (body, *content_type), expected_status, message in cases:
        status, _, raw = request(port, "POST", "/v1/keypoints", body,
                                 {"Content-Type": content_type[0] if content_type else "application/octet-stream"})
        assert_error(status, raw, expected_status, message)

    status, _, raw = request(port, "GET", "/v1/keypoints")
    assert_error(status, raw, 405, "Method Not Allowed")
    status, _, raw = request(port, "GET", "/nowhere")
    assert_error(status, raw, 404, "Not Found")

    monkeypatch.setattr(serve, "MAX_PIXELS", 100_000)
    status, _, raw = request(port, "POST", "/v1/keypoints", astronaut_jpeg)
    assert_error(status, raw, 413, "upload: 512x512 pixels, more than the 100,000 accepted")


def test_a_failing_predictor_is_a_500_and_the_server_goes_on(server, predictor, astronaut_jpeg):
    predictor.failure = RuntimeError("a bug")
    try:
        status, _, raw = request(server["port"], "POST", "/v1/keypoints", astronaut_jpeg)
    finally:
        predictor.failure = None
    assert_error(status, raw, 500, "internal error: RuntimeError")
    status, result = post_image(server["port"], astronaut_jpeg)
    assert status == 200 and len(result["faces"]) == 1


def test_oversized_bodies_are_refused(server):
    """Refused on the declared length before any byte is read, and while streaming when no length is declared."""
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    connection.putrequest("POST", "/v1/keypoints")
    connection.putheader("Content-Length", str(100 << 20))
    connection.endheaders()
    response = connection.getresponse()
    assert_error(response.status, response.read(), 413, f"request body of {100 << 20:,} bytes is over the limit of "
                                                         f"{MAX_UPLOAD:,}")
    connection.close()

    chunks = iter([b"\xff" * (64 << 10)] * (MAX_UPLOAD // (64 << 10) + 1))  # sent chunked: no Content-Length
    status, _, raw = request(server["port"], "POST", "/v1/keypoints", chunks, {"Content-Type": "image/jpeg"})
    assert_error(status, raw, 413, f"request body is over the limit of {MAX_UPLOAD:,} bytes")


def test_concurrent_requests_are_batched_and_never_compile(server, predictor, astronaut_jpeg):
    """Requests that arrive while a call runs go into the next calls together, at most BATCH images each, and no
    request compiles anything: the server compiled every batch shape at start-up."""
    mirrored = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[:, ::-1])).save(mirrored, "JPEG", quality=90)
    photos = [astronaut_jpeg, mirrored.getvalue()]
    alone = [post_image(server["port"], photo)[1] for photo in photos]

    compilations = []

    def count(event: str, duration: float, **_) -> None:
        if event == BACKEND_COMPILE:
            compilations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    predictor.gate.clear()
    predictor.calls.clear()
    inference = server["app"].state.inference
    requests = 9
    try:
        with ThreadPoolExecutor(requests) as pool:
            replies = [pool.submit(post_image, server["port"], photos[i % 2]) for i in range(requests)]
            deadline = time.monotonic() + 60
            while sum(predictor.calls) + inference.waiting.qsize() < requests and time.monotonic() < deadline:
                time.sleep(0.02)
            predictor.gate.set()  # the first call was held back until every request was in or waiting for a call
            results = [reply.result() for reply in replies]
    finally:
        predictor.gate.set()
        jax.monitoring.unregister_event_duration_listener(count)

    rest = requests - predictor.calls[0]
    assert predictor.calls[1:] == [BATCH] * (rest // BATCH) + ([rest % BATCH] if rest % BATCH else [])
    assert compilations == []
    for i, (status, result) in enumerate(results):
        assert status == 200
        (face,), (face_alone,) = result["faces"], alone[i % 2]["faces"]
        assert face["box"] == face_alone["box"]
        got, want = np.array(list(face["keypoints"].values())), np.array(list(face_alone["keypoints"].values()))
        assert np.abs(got - want).max() < 0.05  # batched with other faces: the same up to float rounding


def kpjax_serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kpjax", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])


def test_cli_serves_until_ctrl_c_and_refuses_a_busy_port(astronaut_jpeg):
    process = kpjax_serve("--port", "0", "--batch", "2")
    try:
        line = process.stdout.readline()  # printed once the model is compiled and the port is listening
        assert line.startswith("kpjax serve: model default, compiled for 1-2 faces per call"), process.stderr.read()
        port = int(line.rsplit(":", 1)[1].strip(" /\n"))
        status, result = post_image(port, astronaut_jpeg)
        assert status == 200 and len(result["faces"]) == 1
        assert_on_the_face(result["faces"][0]["keypoints"])

        busy = subprocess.run([sys.executable, "-m", "kpjax", "serve", "--port", str(port)], capture_output=True,
                              text=True, timeout=300)
        assert busy.returncode == 2
        assert busy.stderr.strip() == (f"error: --host 127.0.0.1 --port {port}: "
                                       "cannot listen there (Address already in use)")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    assert "Traceback" not in process.stderr.read()


def test_cli_without_the_serve_extra_says_what_to_install():
    blocked = "import sys; sys.modules['uvicorn'] = None; from kpjax.cli import main; sys.argv[0] = 'kpjax'; main()"
    done = subprocess.run([sys.executable, "-c", blocked, "serve"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KPJAX_NO_REEXEC": "1"})
    assert done.returncode == 2
    assert done.stderr.strip() == "error: kpjax serve needs uvicorn: pip install 'kpjax[serve]'"


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright; skipped, with the reason, where it cannot start."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does")
    with sync_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        except sync_api.Error as error:
            pytest.skip(f"{CHROMIUM} does not start under Playwright: {str(error).splitlines()[0]}")
        yield chromium
        chromium.close()


def test_page_draws_the_astronauts_keypoints(server, browser, astronaut_jpeg, tmp_path):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("hello")
    page = browser.new_page()
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server["url"])
    page.wait_for_function("() => document.getElementById('model').textContent.includes('15 keypoints')")

    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#overlay circle.keypoint")
    dots = page.locator("#overlay circle.keypoint")
    assert dots.count() == 15
    # Each dot is drawn at the pixel (+0.5: SVG pixels span [i, i + 1]) the API gave for its keypoint.
    points = dots.evaluate_all("dots => dots.map(d => [d.dataset.name, +d.getAttribute('cx'), +d.getAttribute('cy')])")
    assert_on_the_face({name: (x - 0.5, y - 0.5) for name, x, y in points})
    assert page.locator("#overlay rect.box").count() == 1
    assert page.locator("#overlay circle.expected-error").count() == 15  # a ring per point: its expected error
    assert page.locator("#numbers tbody tr").count() == 15
    assert page.locator("#numbers th").all_text_contents() == ["keypoint", "x", "y", "± px"]
    assert "expected NME" in page.locator(".face-meta").text_content()
    assert page.locator("#status").text_content().startswith("1 face in 512×512 px")
    # The dots sit over the photo as shown: the overlay's box is the image's box on the page.
    assert page.locator("#overlay").bounding_box() == page.locator("#photo").bounding_box()

    page.set_input_files("#file", str(not_a_photo))
    page.wait_for_selector("#status.error")
    assert page.locator("#status").text_content() == "notes.txt: unreadable image (not an image format Pillow reads)"
    assert page.locator("#overlay circle").count() == 0

    page.goto(server["url"] + "docs")
    page.wait_for_selector("#docs .operation")
    assert page.locator("#docs .operation h2").all_text_contents() == ["POST/v1/keypoints", "GET/healthz"]

    assert all(url.startswith((server["url"], "blob:", "data:")) for url in requested), requested
    page.close()


def test_page_sends_a_webcam_photo(server, browser):
    """Chromium's fake webcam draws a test pattern: the photo goes through the API, which finds no face in it."""
    page = browser.new_page()
    page.goto(server["url"])
    page.click("#camera-start")
    page.wait_for_function("() => document.getElementById('camera').videoWidth > 0")  # frames are coming
    page.click("#camera-shoot")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('No face found in webcam')")
    assert page.locator("#status").text_content().startswith("No face found in webcam.jpg")
    assert page.locator("#camera").is_hidden() and page.locator("#photo").is_visible()
    assert page.locator("#overlay circle").count() == 0
    page.close()
