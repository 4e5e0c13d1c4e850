"""--check-urls: media URLs looked at before the service is asked to fetch them, on a
purpose-built media host on loopback (the service's own fetching is not simulated)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from batchkimi.planner import make_plan
from batchkimi.prepare import prepare_job
from batchkimi.simulator import SimulatorServer
from tests.helpers import make_spec, read_results, run

GB = 2**30
#: path -> (status of HEAD, Content-Length it claims)
FILES = {
    "/ok.jpg": (200, 120_000),
    "/big.jpg": (200, 12 * 2**20),  # over the 10 MB an image may be
    "/ok.mp4": (200, 2 * GB - 1),
    "/big.mp4": (200, 3 * GB),  # over the 2 GB a video URL may be
    "/gone.mp4": (404, 0),
    "/private.jpg": (403, 0),
    "/flaky.jpg": (503, 0),  # the host's trouble, not the row's: passes
    "/nohead.mp4": (405, 0),  # HEAD refused: a ranged GET tells the size
}


class MediaHost(BaseHTTPRequestHandler):
    seen: ClassVar[Counter[str]] = Counter()

    def do_HEAD(self) -> None:
        MediaHost.seen[f"HEAD {self.path}"] += 1
        status, length = FILES.get(self.path, (404, 0))
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self) -> None:
        MediaHost.seen[f"GET {self.path}"] += 1
        assert self.headers["Range"] == "bytes=0-0"
        self.send_response(206)
        self.send_header("Content-Range", f"bytes 0-0/{3 * GB}")
        self.send_header("Content-Length", "1")
        self.end_headers()
        self.wfile.write(b"\0")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def media_host() -> Iterator[str]:
    MediaHost.seen = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), MediaHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def rows(host: str) -> list[dict[str, str]]:
    images = ["ok.jpg", "big.jpg", "private.jpg", "flaky.jpg", "ok.jpg"]
    videos = ["ok.mp4", "big.mp4", "gone.mp4", "nohead.mp4"]
    return [
        *(
            {"id": f"i{n}", "image": f"{host}/{name}", "video": ""}
            for n, name in enumerate(images)
        ),
        *(
            {"id": f"v{n}", "image": "", "video": f"{host}/{name}"}
            for n, name in enumerate(videos)
        ),
    ]


REFUSED = {
    "i1": "is 12.0 MB; an image by URL may be at most 10.0 MB",
    "i2": "answers HTTP 403 here",
    "v1": "is 3.00 GB; a video by URL may be at most 2.00 GB",
    "v2": "answers HTTP 404 here",
    "v3": "is 3.00 GB; a video by URL may be at most 2.00 GB",
}


def test_plan_lists_dead_and_oversized_urls_when_asked(
    tmp_path: Path, simulator: SimulatorServer, media_host: str
) -> None:
    spec = make_spec(
        tmp_path, simulator, rows=rows(media_host), prompt="?", check_urls=True
    )
    plan = make_plan(prepare_job(spec))
    by_id = {p["id"]: p["message"] for p in plan.problems}
    assert set(by_id) == set(REFUSED)
    for row_id, words in REFUSED.items():
        assert words in by_id[row_id], by_id[row_id]
    assert by_id["v2"].startswith('row 8 (id "v2"), column "video": http://')
    assert (plan.to_send, plan.duplicates) == (3, 1)  # ok.jpg, flaky.jpg, ok.mp4
    assert MediaHost.seen["HEAD /ok.jpg"] == 1  # a URL in two rows, asked once
    assert MediaHost.seen["GET /nohead.mp4"] == 1
    assert simulator.requests == []  # nothing went to the service


def test_plan_looks_at_no_url_unless_asked(
    tmp_path: Path, simulator: SimulatorServer, media_host: str
) -> None:
    spec = make_spec(tmp_path, simulator, rows=rows(media_host), prompt="?")
    assert make_plan(prepare_job(spec)).problem_count == 0
    assert sum(MediaHost.seen.values()) == 0


def test_run_does_not_send_rows_whose_urls_would_be_refused(
    tmp_path: Path, simulator: SimulatorServer, media_host: str
) -> None:
    spec = make_spec(
        tmp_path, simulator, rows=rows(media_host), prompt="?", check_urls=True
    )
    assert run(spec).exit_code == 1
    results = read_results(spec)
    failed = dict(
        zip(
            results.filter(results["status"] == "error")["id"],
            results.filter(results["status"] == "error")["error_message"],
            strict=True,
        )
    )
    assert set(failed) == set(REFUSED)
    assert all(REFUSED[i] in failed[i] for i in REFUSED)
    assert set(results.filter(results["status"] == "error")["error_code"]) == {
        "invalid_media"
    }
    assert len(simulator.requests) == 3  # ok.jpg once (its two rows are one request)
    sent = " ".join(str(r.body) for r in simulator.requests)
    assert all(f"{media_host}/{name}" in sent for name in ("ok.jpg", "ok.mp4"))
    assert "big" not in sent and "gone" not in sent
