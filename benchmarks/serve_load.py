"""Requests/s and latency of a running ``kpjax serve`` for one photo: a bounded load of concurrent clients.

Each of ``--clients`` threads keeps one HTTP connection open and posts the photo
``--requests`` times in a row; a run is over when all are done. Figures per run:
requests/s (all requests over the run's wall time) and the p50/p99 latency of
single requests; then the medians over ``--runs`` runs. Every answer must be a
200 with the same number of faces as the first, or the run stops.

    kpjax serve --port 8000 &
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 1,4,8 --requests 30 --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


def astronaut_jpeg() -> bytes:
    """scikit-image's astronaut (512x512, one face) as a JPEG, the photo of the tests."""
    import skimage.data
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(connection: http.client.HTTPConnection, photo: bytes) -> dict:
    connection.request("POST", "/v1/keypoints", body=photo, headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise SystemExit(f"error: HTTP {response.status}: {body.decode(errors='replace')}")
    return json.loads(body)


def run(host: str, port: int, photo: bytes, clients: int, requests: int, faces: int) -> dict:
    """One bounded run: ``clients`` connections, ``requests`` posts each."""
    latencies: list[float] = []
    failures: list[str] = []
    start = threading.Barrier(clients + 1)

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=120)
        start.wait()
        try:
            for _ in range(requests):
                sent = time.perf_counter()
                result = post(connection, photo)
                latencies.append(time.perf_counter() - sent)
                if len(result["faces"]) != faces:
                    failures.append(f"{len(result['faces'])} faces instead of {faces}")
        except (OSError, SystemExit) as error:
            failures.append(str(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise SystemExit(f"error: {len(failures)} failed requests, first: {failures[0]}")
    return {"clients": clients, "requests": len(latencies), "requests_per_s": len(latencies) / wall,
            "p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="The running server.")
    parser.add_argument("--image", type=Path, help="The photo to send (default: the astronaut as a JPEG).")
    parser.add_argument("--clients", default="1,4,8", help="Concurrent clients, one or more counts (comma-separated).")
    parser.add_argument("--requests", type=int, default=30, help="Requests per client per run.")
    parser.add_argument("--runs", type=int, default=3, help="Runs per client count; figures are their medians.")
    args = parser.parse_args()
    address = urlsplit(args.url)
    host, port = address.hostname, address.port or 80
    photo = args.image.read_bytes() if args.image else astronaut_jpeg()
    warm = http.client.HTTPConnection(host, port, timeout=120)
    faces = len(post(warm, photo)["faces"])
    for _ in range(5):
        post(warm, photo)
    warm.close()
    print(f"photo {len(photo):,} bytes, {faces} face(s); {args.requests} requests per client, {args.runs} runs")
    for clients in (int(n) for n in args.clients.split(",")):
        runs = [run(host, port, photo, clients, args.requests, faces) for _ in range(args.runs)]
        for r in runs:
            print(f"  clients {clients}: {r['requests_per_s']:.1f} requests/s, p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms")
        print(f"clients {clients}: median {statistics.median(r['requests_per_s'] for r in runs):.1f} requests/s, "
              f"p50 {statistics.median(r['p50_ms'] for r in runs):.1f} ms, "
              f"p99 {statistics.median(r['p99_ms'] for r in runs):.1f} ms")


if __name__ == "__main__":
    main()
