"""Every documented media limit, on both sides of its boundary, on real files where a
file decides it (FACTS §1.4; the Kimi page's "File limitations")."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from batchkimi.media import limits
from batchkimi.media.paths import MediaRoot
from batchkimi.media.preflight import MediaSettings, Route, image_route, video_route
from batchkimi.media.samples import make_video
from batchkimi.records import VideoPart

COMPAT = MediaSettings(native=False)
NATIVE = MediaSettings(native=True)
MB = limits.MB


def image(path: Path, width: int, height: int) -> str:
    Image.new("RGB", (width, height), (200, 30, 30)).save(path)
    return MediaRoot.uri(path)


def noise_png(path: Path, nbytes: int) -> str:
    """A PNG of random pixels: it does not compress, so its size is about nbytes."""
    side = int((nbytes / 3) ** 0.5)
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        path, compress_level=0
    )
    return MediaRoot.uri(path)


def refused(check: Callable[[], object]) -> str:
    """The problem and the fix a check refused with."""
    with pytest.raises(Exception) as caught:
        check()
    return f"{caught.value} {getattr(caught.value, 'fix', '')}"


def test_width_and_height_must_exceed_ten_pixels(tmp_path: Path) -> None:
    assert image_route(image(tmp_path / "ok.png", 11, 11), COMPAT) is Route.DATA_URL
    why = refused(lambda: image_route(image(tmp_path / "no.png", 10, 40), COMPAT))
    assert "10x40 px" in why and "exceed 10 px" in why


def test_aspect_ratio_at_most_200_to_1(tmp_path: Path) -> None:
    assert image_route(image(tmp_path / "ok.png", 2200, 11), COMPAT) is Route.DATA_URL
    why = refused(lambda: image_route(image(tmp_path / "no.png", 2211, 11), COMPAT))
    assert "201:1" in why and "200:1" in why


def test_above_4k_only_jpeg_and_png_unless_fixed(tmp_path: Path) -> None:
    big = (3841, 2160)
    assert image_route(image(tmp_path / "ok.png", *big), COMPAT) is Route.DATA_URL
    webp = image(tmp_path / "no.webp", *big)
    assert "only JPEG and PNG" in refused(lambda: image_route(webp, COMPAT))
    fixing = MediaSettings(native=False, fix_images=True)
    assert image_route(webp, fixing) is Route.SHRINK
    below = image(tmp_path / "small.webp", 3840, 2160)  # exactly 4K: any format
    assert image_route(below, COMPAT) is Route.DATA_URL


def test_8k_is_the_recommended_maximum_not_a_limit() -> None:
    """Both seed pages: 8K is recommended, "higher resolutions may cause API call
    timeouts" (issue 16): a larger image is sent, with advice, never refused."""
    assert limits.check_image(7681, 4320, "image/jpeg", None) is None
    assert limits.image_advice(7680, 4320) is None
    assert "8K" in (limits.image_advice(7681, 4320) or "")


def test_an_image_file_may_be_at_most_10_mb() -> None:
    assert limits.check_image(100, 100, "image/png", limits.IMAGE_MAX_BYTES) is None
    too_big = limits.check_image(100, 100, "image/png", limits.IMAGE_MAX_BYTES + 1)
    assert too_big is not None and "10.0 MB" in too_big


def test_base64_over_10_mb_goes_by_upload_natively_and_is_refused_in_compat(
    tmp_path: Path,
) -> None:
    fits = noise_png(tmp_path / "fits.png", int(7.3 * MB))
    assert image_route(fits, COMPAT) is Route.DATA_URL
    over = noise_png(tmp_path / "over.png", int(7.7 * MB))
    assert image_route(over, NATIVE) is Route.UPLOAD  # under 10 MB as a file
    why = refused(lambda: image_route(over, COMPAT))
    assert "base64 data URL" in why and "--api dashscope" in why
    assert image_route(over, MediaSettings(native=False, fix_images=True)) is (
        Route.SHRINK
    )


def test_encoded_length_boundary_is_exact() -> None:
    assert limits.check_encoded(limits.ENCODED_MAX_BYTES, "an image") is None
    assert limits.check_encoded(limits.ENCODED_MAX_BYTES + 1, "an image")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / "clip.mp4", seconds=3)


def padded(clip: Path, folder: Path, size: int) -> VideoPart:
    """The clip with zeros after its end (sparse: no disk used): as large as a long
    video to every size rule, and still a video to its reader."""
    path = folder / f"padded-{size}.mp4"
    path.write_bytes(clip.read_bytes())
    os.truncate(path, size)
    return VideoPart(url=MediaRoot.uri(path))


def test_video_transport_by_size_and_api(clip: Path, tmp_path: Path) -> None:
    small = VideoPart(url=MediaRoot.uri(clip))
    route, duration = video_route(small, COMPAT)
    assert route is Route.DATA_URL and duration == pytest.approx(3.0)
    fits = int(7.49 * MB)  # base64 of this is just under 10 MB
    over = int(7.51 * MB)
    assert video_route(padded(clip, tmp_path, fits), COMPAT)[0] is Route.DATA_URL
    assert video_route(padded(clip, tmp_path, over), COMPAT)[0] is Route.FRAMES
    assert video_route(padded(clip, tmp_path, over), NATIVE)[0] is Route.UPLOAD
    at_limit = padded(clip, tmp_path, limits.VIDEO_LOCAL_MAX_BYTES)
    beyond = padded(clip, tmp_path, limits.VIDEO_LOCAL_MAX_BYTES + 1)
    assert video_route(at_limit, NATIVE)[0] is Route.UPLOAD
    assert video_route(beyond, NATIVE)[0] is Route.FRAMES
    never = MediaSettings(native=True, video_frames="never")
    why = refused(lambda: video_route(beyond, never))
    assert "100 MB through the upload" in why and "video_frames = auto" in why
    always = MediaSettings(native=False, video_frames="always")
    assert video_route(small, always)[0] is Route.FRAMES


def test_a_video_lasts_2_seconds_to_1_hour(tmp_path: Path) -> None:
    short = VideoPart(url=MediaRoot.uri(make_video(tmp_path / "s.mp4", seconds=1.5)))
    assert "lasts 1.5 s" in refused(lambda: video_route(short, COMPAT))
    ok = VideoPart(url=MediaRoot.uri(make_video(tmp_path / "ok.mp4", seconds=2.0)))
    assert video_route(ok, COMPAT)[0] is Route.DATA_URL
    assert limits.check_duration(3600.0) is None
    assert limits.check_duration(3600.1)


@pytest.mark.parametrize(
    ("count", "fine"), [(3, False), (4, True), (2000, True), (2001, False)]
)
def test_a_frame_list_has_4_to_2000_images(count: int, fine: bool) -> None:
    assert (limits.check_frame_count(count) is None) is fine


@pytest.mark.parametrize(
    ("fps", "fine"), [(0.09, False), (0.1, True), (10.0, True), (10.01, False)]
)
def test_fps_from_0_1_to_10(fps: float, fine: bool) -> None:
    assert (limits.check_fps(fps) is None) is fine


def test_every_documented_image_format_has_its_mime_type() -> None:
    assert limits.IMAGE_TYPES == {
        ".bmp": "image/bmp",
        ".jpe": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".jpg": "image/jpeg",
        ".png": "image/png",
        ".tif": "image/tiff",
        ".tiff": "image/tiff",
        ".webp": "image/webp",
        ".heic": "image/heic",
    }
