"""Write sample_data/reviews.csv: 300 short product reviews, made up here, seeded.

Run: python sample_data/make_reviews.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

PRODUCTS = [
    "kettle",
    "desk lamp",
    "backpack",
    "headphones",
    "coffee grinder",
    "running shoes",
    "phone case",
    "blender",
    "office chair",
    "water bottle",
]
GOOD = [
    "works perfectly",
    "arrived early",
    "feels sturdy",
    "is great value",
    "exceeded my expectations",
    "is quiet and fast",
    "looks beautiful",
]
BAD = [
    "broke after a week",
    "arrived damaged",
    "is much smaller than pictured",
    "stopped working",
    "is overpriced",
    "smells of plastic",
    "is very loud",
]
MEH = [
    "is fine for the price",
    "does the job",
    "is okay, nothing special",
    "works but the manual is confusing",
]


def main() -> None:
    rng = random.Random(20261124)
    out = Path(__file__).with_name("reviews.csv")
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review_id", "product", "stars", "review"])
        for i in range(1, 301):
            product = rng.choice(PRODUCTS)
            mood = rng.choice(["good", "bad", "meh"])
            phrases = {"good": GOOD, "bad": BAD, "meh": MEH}[mood]
            first, second = rng.sample(phrases, 2)
            stars = {"good": rng.choice([4, 5]), "bad": rng.choice([1, 2]), "meh": 3}[
                mood
            ]
            review = f"The {product} {first}, and it {second}."
            writer.writerow([f"rev-{i:04d}", product, stars, review])


if __name__ == "__main__":
    main()
