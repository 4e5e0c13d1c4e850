"""Every media form, in both APIs, through a whole run against the simulator: what
goes on the wire, and what comes back."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchkimi.clock import ManualClock
from batchkimi.credentials import ApiKey
from batchkimi.media import preflight
from batchkimi.media.samples import make_image, make_video
from batchkimi.planner import make_plan
from batchkimi.prepare import prepare_job
from batchkimi.schedule import media
from batchkimi.settings import Job
from batchkimi.simulator import SimulatorServer, error
from batchkimi.uploads import TemporaryUploader
from tests.helpers import make_spec, read_results, run

APIS = ["openai", "dashscope"]


def generations(simulator: SimulatorServer) -> list[Any]:
    return [r for r in simulator.requests if r.api in ("compatible", "native")]


def wire_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The media parts of the user message, in either API's shape."""
    messages = body["messages"] if "messages" in body else body["input"]["messages"]
    content = messages[-1]["content"]
    return [p for p in content if isinstance(p, dict) and "text" not in p]


def url_of(part: dict[str, Any]) -> Any:
    for key in ("image", "video", "image_url", "video_url"):
        if key in part:
            value = part[key]
            return value["url"] if isinstance(value, dict) else value
    raise AssertionError(part)


def decoded(data_url: str) -> tuple[str, bytes]:
    header, _, payload = data_url.partition(",")
    return header[5:].removesuffix(";base64"), base64.b64decode(payload)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("suffix", "mime"),
    [
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".webp", "image/webp"),
        (".bmp", "image/bmp"),
        (".tiff", "image/tiff"),
    ],
)
def test_a_local_image_goes_as_a_data_url_of_its_type(
    api: str, suffix: str, mime: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    path = make_image(tmp_path / "in" / f"cat{suffix}", 64, 48)
    spec = make_spec(
        tmp_path,
        simulator,
        rows=[{"id": "a", "image": path.name}],
        api=api,
        prompt="What is this?",
    )
    assert run(spec).exit_code == 0
    [sent] = generations(simulator)
    [part] = wire_parts(sent.body)
    kind, data = decoded(url_of(part))
    assert kind == mime and data == path.read_bytes()


@pytest.mark.parametrize("api", APIS)
def test_several_images_urls_and_data_urls_in_one_row(
    api: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    local = make_image(tmp_path / "in" / "a.png", 40, 40)
    given = "data:image/png;base64," + base64.b64encode(local.read_bytes()).decode()
    images = json.dumps([local.name, "https://example.com/b.jpg", given])
    spec = make_spec(
        tmp_path,
        simulator,
        rows=[{"id": "r", "images": images}],
        api=api,
        prompt="Compare.",
    )
    assert run(spec).exit_code == 0
    [sent] = generations(simulator)
    urls = [url_of(p) for p in wire_parts(sent.body)]
    assert urls[0].startswith("data:image/png;base64,")
    assert urls[1:] == ["https://example.com/b.jpg", given]  # passed on as they are


@pytest.mark.parametrize("api", APIS)
def test_a_small_local_video_goes_whole_as_base64(
    api: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    clip = make_video(tmp_path / "in" / "clip.mp4", seconds=3)
    spec = make_spec(
        tmp_path,
        simulator,
        rows=[{"id": "v", "video": "clip.mp4", "fps": "1"}],
        api=api,
        prompt="Caption.",
    )
    assert run(spec).exit_code == 0
    [part] = wire_parts(generations(simulator)[0].body)
    kind, data = decoded(url_of(part))
    assert (kind, data) == ("video/mp4", clip.read_bytes())
    assert part["fps"] == 1


def big_video(folder: Path, size: int) -> Path:
    """A real 4 s clip, padded with zeros to ``size`` bytes (sparse): large to every
    size rule, still a video to its readers."""
    path = make_video(folder / "big.mp4", seconds=4)
    os.truncate(path, size)
    return path


def upload_job(
    tmp_path: Path,
    simulator: SimulatorServer,
    rows: list[dict[str, Any]],
    prompt: str = "Caption.",
    **overrides: Any,
) -> Job:
    """A native captioning job over ``big.mp4`` (9 MB: the temporary upload's)."""
    big_video(tmp_path / "in", 9 * 2**20)
    return make_spec(
        tmp_path, simulator, rows=rows, api="dashscope", prompt=prompt, **overrides
    )


def test_compat_sends_a_video_too_large_for_base64_as_extracted_frames(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    big_video(tmp_path / "in", 9 * 2**20)
    spec = make_spec(
        tmp_path,
        simulator,
        rows=[{"id": "v", "video": "big.mp4", "fps": "2"}],
        prompt="Caption.",
    )
    assert run(spec).exit_code == 0
    [part] = wire_parts(generations(simulator)[0].body)
    assert part["type"] == "video" and len(part["video"]) == 8  # 4 s at 2 a second
    assert part["fps"] == 2
    kind, jpeg = decoded(part["video"][0])
    assert kind == "image/jpeg" and Image.open(io.BytesIO(jpeg)).size == (160, 120)
    assert read_results(spec)["status"].to_list() == ["ok"]


def test_native_uploads_a_large_video_once_per_policy_and_resolves_oss(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    big_video(tmp_path / "in", 9 * 2**20)
    make_video(tmp_path / "in" / "other.mp4", seconds=3)
    os.truncate(tmp_path / "in" / "other.mp4", 8 * 2**20)
    rows = [{"id": "a", "video": "big.mp4"}, {"id": "b", "video": "other.mp4"}]
    spec = make_spec(
        tmp_path,
        simulator,
        rows=rows,
        api="dashscope",
        prompt="Caption.",
        concurrency=1,
    )
    assert run(spec).exit_code == 0
    sent = generations(simulator)
    urls = [url_of(wire_parts(r.body)[0]) for r in sent]
    assert all(u.startswith("oss://dashscope-instant/") for u in urls)
    assert all(r.headers["x-dashscope-ossresourceresolve"] == "enable" for r in sent)
    assert simulator.app.uploads.policies_issued == 1  # one policy, two files
    assert read_results(spec)["status"].to_list() == ["ok", "ok"]


def test_an_expired_policy_is_renewed_and_the_upload_retried(
    tmp_path: Path, simulator: SimulatorServer, canary_key: str
) -> None:
    import asyncio
    import time

    simulator.reset(seed=1, policy_expire_s=0.3)
    picture = make_image(tmp_path / "p.png", 32, 32)
    another = make_image(tmp_path / "q.png", 32, 32)

    async def go() -> list[str]:
        # a clock that never moves: the uploader believes its policy is fresh, so
        # only the store's "Policy expired" can tell it otherwise
        uploader = TemporaryUploader(
            ApiKey(canary_key), f"{simulator.url}/api/v1", clock=ManualClock()
        )
        try:
            first = await uploader.upload("kimi-k2.6", picture, "image/png")
            await asyncio.sleep(0.4)
            second = await uploader.upload("kimi-k2.6", another, "image/png")
            return [first, second, str(uploader.policies_fetched)]
        finally:
            await uploader.aclose()

    started = time.monotonic()
    first, second, fetched = asyncio.run(go())
    assert time.monotonic() - started < 5
    assert first.startswith("oss://") and second.startswith("oss://")
    assert fetched == "2"
    assert simulator.app.uploads.policies_issued == 2
    rejected = [r for r in simulator.requests if r.api == "oss" and r.status == 403]
    assert len(rejected) == 1  # the expired policy, refused once, then renewed


@pytest.mark.parametrize("api", APIS)
def test_frames_from_a_list_or_a_folder(
    api: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    for i in range(5):
        make_image(tmp_path / "in" / "shots" / f"f{i + 1}.jpg", 32, 24)
    listed = json.dumps([f"shots/f{i}.jpg" for i in (1, 2, 3, 4)])
    rows = [
        {"id": "list", "frames": listed, "fps": "0.5"},
        {"id": "folder", "frames": "shots", "fps": "0.5"},
    ]
    spec = make_spec(tmp_path, simulator, rows=rows, api=api, prompt="What happens?")
    assert run(spec).exit_code == 0
    counts = sorted(len(url_of(wire_parts(r.body)[0])) for r in generations(simulator))
    assert counts == [4, 5]
    for request in generations(simulator):
        [part] = wire_parts(request.body)
        assert part["fps"] == 0.5
        assert all(u.startswith("data:image/jpeg;base64,") for u in url_of(part))


def test_problem_media_fails_its_row_alone_naming_row_file_and_limit(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    make_image(tmp_path / "in" / "ok.png", 40, 40)
    make_image(tmp_path / "in" / "tiny.png", 8, 40)
    for i in range(3):
        make_image(tmp_path / "in" / "few" / f"{i}.jpg", 32, 32)
    rows = [
        {"id": "ok", "image": "ok.png", "frames": "", "fps": ""},
        {"id": "tiny", "image": "tiny.png", "frames": "", "fps": ""},
        {"id": "few", "image": "", "frames": "few", "fps": ""},
        {"id": "fast", "image": "ok.png", "frames": "", "fps": "12"},
        {"id": "ftp", "image": "ftp://host/a.png", "frames": "", "fps": ""},
        {"id": "junk", "image": "data:image/png;base64,AAAA", "frames": "", "fps": ""},
    ]
    spec = make_spec(tmp_path, simulator, rows=rows, prompt="?")
    assert run(spec).exit_code == 1
    results = read_results(spec)
    by_id = dict(zip(results["id"], results["error_message"], strict=True))
    assert by_id["ok"] is None
    assert by_id["tiny"].startswith('row 2 (id "tiny"), column "image": ')
    assert "tiny.png is 8x40 px" in by_id["tiny"]
    assert "has 3 frames" in by_id["few"]
    assert "fps = 12 is outside" in by_id["fast"]
    assert "ftp:// address, which the service cannot fetch" in by_id["ftp"]
    assert by_id["junk"].startswith('row 6 (id "junk"), column "image": data:')
    assert "cannot be read as an image. Check that it is whole" in by_id["junk"]
    assert len(generations(simulator)) == 1  # only the good row was sent


def test_a_failed_upload_is_tried_again_within_the_run(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """The store answers 500 twice, getPolicy 503 once: the row backs off and tries
    again, as a request would, and its retries say why."""
    simulator.script("oss", [error("InternalError"), error("InternalError")])
    simulator.script("getPolicy", [error("ModelServingError")])
    rows = [{"id": "a", "video": "big.mp4"}]
    spec = upload_job(tmp_path, simulator, rows, max_attempts=5)
    assert run(spec).exit_code == 0
    results = read_results(spec)
    assert results["status"].to_list() == ["ok"]
    assert json.loads(results["retries"][0]) == {"upload_failed": 3}
    assert results["attempts"].to_list() == [1]  # the request itself, once
    assert results["wait_ms"][0] > 0
    stored = [r for r in simulator.requests if r.api == "oss" and r.status == 200]
    assert len(stored) == 1


def test_uploads_that_keep_failing_leave_the_row_retryable(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.script("oss", [error("InternalError")] * 3)
    rows = [{"id": "a", "video": "big.mp4"}]
    spec = upload_job(tmp_path, simulator, rows, max_attempts=3)
    assert run(spec).exit_code == 1
    results = read_results(spec)
    assert results["error_code"].to_list() == ["upload_failed"]
    assert "gave up after 3 tries" in results["error_message"][0]
    assert results["retryable"].to_list() == [True]
    assert generations(simulator) == []  # nothing was asked without its video
    assert run(spec).exit_code == 0  # the next run sends it, unasked
    assert read_results(spec)["status"].to_list() == ["ok"]


def test_a_refused_key_at_get_policy_stops_the_run_with_exit_5(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    simulator.reset(seed=1, api_keys=frozenset({"sk-some-other-key"}))
    rows = [{"id": f"v{i}", "video": "big.mp4", "n": str(i)} for i in range(6)]
    spec = upload_job(tmp_path, simulator, rows, "Caption {n}.", concurrency=2)
    outcome = run(spec)
    assert outcome.exit_code == 5
    assert outcome.fatal is not None and outcome.fatal.code == "InvalidApiKey"
    policies = [r for r in simulator.requests if r.api == "upload"]
    assert len(policies) <= 2  # stopped at once, not once per row


def test_one_file_in_several_rows_is_uploaded_once(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    rows = [{"id": f"q{i}", "video": "big.mp4", "n": str(i)} for i in range(4)]
    spec = upload_job(tmp_path, simulator, rows, "Question {n}.", concurrency=4)
    assert run(spec).exit_code == 0
    stored = [r for r in simulator.requests if r.api == "oss"]
    assert len(stored) == 1
    assert len({url_of(wire_parts(r.body)[0]) for r in generations(simulator)}) == 1


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes: what a
    decompression bomb looks like to a reader of headers."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_its_rows_error_in_plan_and_run(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """An image of 400 million pixels in 57 bytes: Pillow refuses to size it. The
    row fails with the file and the limit named; the run goes on."""
    (tmp_path / "in").mkdir()
    png_header(tmp_path / "in" / "bomb.png", 20_000, 20_000)
    make_image(tmp_path / "in" / "fine.png", 64, 64)
    rows = [{"id": "bomb", "image": "bomb.png"}, {"id": "fine", "image": "fine.png"}]
    spec = make_spec(tmp_path, simulator, rows=rows, prompt="?")
    plan = make_plan(prepare_job(spec))
    assert plan.problem_count == 1
    assert "bomb.png is too large to read safely" in plan.problems[0]["message"]
    assert run(spec).exit_code == 1
    results = read_results(spec)
    assert results["status"].to_list() == ["error", "ok"]
    assert "the service takes at most 8K" in results["error_message"][0]
    assert len(generations(simulator)) == 1


def test_a_fault_no_rule_foresaw_fails_its_row_alone(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is a boundary: whatever one row raises becomes that row's error
    (retryable: the next run tries it again), and the run carries on."""
    make_image(tmp_path / "in" / "a.png", 64, 64)
    make_image(tmp_path / "in" / "b.png", 64, 64)
    real = preflight.inspect

    def breaks_on_b(request: Any, *args: Any) -> Any:
        if request.row_id == "b":
            msg = "an unforeseen fault"
            raise RuntimeError(msg)
        return real(request, *args)

    monkeypatch.setattr(media, "inspect", breaks_on_b)
    rows = [{"id": "a", "image": "a.png"}, {"id": "b", "image": "b.png"}]
    spec = make_spec(tmp_path, simulator, rows=rows, prompt="?")
    assert run(spec).exit_code == 1
    results = read_results(spec)
    assert results["status"].to_list() == ["ok", "error"]
    assert results["error_code"][1] == "batchkimi_error"
    assert "RuntimeError: an unforeseen fault" in results["error_message"][1]
    assert results["retryable"][1] is True
    monkeypatch.setattr(media, "inspect", real)  # as imported where it is called
    assert run(spec).exit_code == 0  # the next run sends it
