"""Write the sample media: pictures to label and short videos to caption, made here.

    python sample_data/make_media.py

sample_data/images/ gets 12 pictures (PNG, JPEG and WEBP: a coloured shape on a
coloured ground) and images.csv, a manifest asking about each; sample_data/videos/
gets 6 short MP4s of a square crossing the frame, and sample_data/frames/ one video
given as a folder of frames. Seeded: the same files every time.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

from batchkimi.media.samples import COLOURS, make_image, make_video

HERE = Path(__file__).resolve().parent
SHAPES = ("circle", "square", "triangle")
SUFFIXES = (".png", ".jpg", ".webp")


def main() -> None:
    rows = []
    combos = itertools.product(SHAPES, ("red", "green", "yellow", "purple"))
    for i, (shape, colour) in enumerate(combos):
        ground = "blue" if colour != "blue" else "orange"
        name = f"images/{i:02d}-{colour}-{shape}{SUFFIXES[i % len(SUFFIXES)]}"
        make_image(HERE / name, 320, 240, shape=shape, colour=colour, ground=ground)
        rows.append({"image_id": f"img-{i:02d}", "image": name, "truth": shape})
    with (HERE / "images.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image_id", "image", "truth"])
        writer.writeheader()
        writer.writerows(rows)
    colours = list(COLOURS)
    for i in range(6):
        make_video(
            HERE / f"videos/clip-{i}.mp4",
            seconds=3 + i,
            fps=10,
            colour=colours[i % len(colours)],
            ground="blue" if colours[i % len(colours)] != "blue" else "green",
        )
    for i in range(8):
        make_image(HERE / f"frames/walk/frame-{i + 1}.jpg", 160, 120, shape="circle")
    print(f"wrote {len(rows)} images, 6 videos and 8 frames under {HERE}")


if __name__ == "__main__":
    main()
