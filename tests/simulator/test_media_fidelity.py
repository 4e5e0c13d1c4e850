"""The simulator refuses media as the service documents it would (400
InvalidParameter), in both APIs' part shapes: raw requests, no batchkimi client."""

from __future__ import annotations

import base64
import io
from fractions import Fraction
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from batchkimi.simulator import SimulatorServer

NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"
COMPAT = "/compatible-mode/v1/chat/completions"


def png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def picture(fmt: str, width: int, height: int, **options: Any) -> str:
    """A data URL of a grey ``fmt`` image, cheap to make even at 8K."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 9).save(buffer, format=fmt, **options)
    mime = {"JPEG": "jpeg", "TIFF": "tiff"}.get(fmt, fmt.lower())
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def clip(seconds: float, container: str = "mp4", mime: str = "video/mp4") -> str:
    """A data URL of a tiny H.264 video ``seconds`` long, made with PyAV."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream("libx264", rate=Fraction(4))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(round(seconds * 4)):
            frame = Image.new("RGB", (32, 32), (i * 20 % 255, 0, 0))
            output.mux(stream.encode(av.VideoFrame.from_image(frame)))  # type: ignore[no-untyped-call]
        output.mux(stream.encode(None))
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def send(simulator: SimulatorServer, api: str, part: dict[str, Any]) -> httpx.Response:
    """One user message with ``part`` (written natively; converted for compat)."""
    if api == "native":
        body: dict[str, Any] = {
            "model": "kimi-k2.6",
            "input": {"messages": [{"role": "user", "content": [part, {"text": "?"}]}]},
            "parameters": {"result_format": "message"},
        }
        path = NATIVE
    else:
        if "image" in part:
            wire = {"type": "image_url", "image_url": {"url": part["image"]}}
        elif isinstance(part["video"], list):
            wire = {"type": "video", "video": part["video"]}
        else:
            wire = {"type": "video_url", "video_url": {"url": part["video"]}}
        wire.update({k: v for k, v in part.items() if k in ("fps", "max_frames")})
        body = {
            "model": "kimi-k2.6",
            "messages": [
                {"role": "user", "content": [wire, {"type": "text", "text": "?"}]}
            ],
        }
        path = COMPAT
    return httpx.post(
        simulator.url + path,
        json=body,
        headers={"Authorization": "Bearer sk-t"},
        timeout=10,
    )


CASES = [
    ({"image": png(11, 11)}, None),
    ({"image": png(10, 40)}, "greater than 10 px"),
    ({"image": png(2200, 11)}, None),
    ({"image": png(2211, 11)}, "200:1"),
    ({"image": "data:image/png;base64,@@@"}, "base64"),
    ({"image": "data:video/mp4;base64,AAAA"}, "not image/"),
    ({"video": [png(16, 16)] * 4, "fps": 2}, None),
    ({"video": [png(16, 16)] * 3, "fps": 2}, "between 4 and 2000"),
    ({"video": ["https://x.test/f.jpg"] * 2001}, "between 4 and 2000"),
    ({"video": [png(16, 16)] * 4, "fps": 10.5}, "fps"),
    ({"video": [png(16, 16)] * 4, "fps": 0.1}, None),
    ({"video": "data:video/mp4;base64," + "A" * (10 * 2**20)}, "10 MB"),
    # the seed: below 4K any listed format; above 4K only JPEG, JPG and PNG
    ({"image": picture("TIFF", 3840, 2160, compression="tiff_deflate")}, None),
    ({"image": picture("TIFF", 3841, 2160, compression="tiff_deflate")}, "JPEG or PNG"),
    ({"image": picture("WEBP", 3841, 2160, lossless=True)}, "JPEG or PNG"),
    ({"image": picture("JPEG", 3841, 2160)}, None),
    ({"image": picture("GIF", 64, 64)}, "GIF is not supported"),
    # 8K (7680x4320) is the recommended maximum, not a limit
    ({"image": picture("PNG", 7700, 4400)}, None),
    # video data URLs: 2 s to 1 hour, in a listed container
    ({"video": clip(1.5)}, "between 2 seconds and 1 hour"),
    ({"video": clip(2.0)}, None),
    ({"video": clip(3.0, "matroska", "video/x-matroska")}, None),
    ({"video": clip(3.0, "mpegts", "video/mp2t")}, "mpegts is not supported"),
    ({"video": "data:video/mp4;base64,AAAA"}, "could not be decoded"),
]


@pytest.mark.parametrize("api", ["native", "compat"])
@pytest.mark.parametrize(("part", "refusal"), CASES)
def test_media_limits_are_enforced_at_the_boundary(
    api: str, part: dict[str, Any], refusal: str | None, simulator: SimulatorServer
) -> None:
    response = send(simulator, api, part)
    if refusal is None:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400
    body = response.json()
    error = body["error"] if api == "compat" else body
    code = error["code"]
    assert code == (
        "invalid_parameter_error" if api == "compat" else "InvalidParameter"
    )
    assert refusal in error["message"]
