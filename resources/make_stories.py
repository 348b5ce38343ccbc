"""Generate resources/stories.txt: short, simple stories from a small hand-written grammar, deterministically.

The grammar and every word list below are original to this project (MIT, like the rest of corral), so
the corpus is license-clean and needs no download. Same seed, same file, byte for byte:

    python resources/make_stories.py            # rewrites resources/stories.txt
    python resources/make_stories.py --check    # exits 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

SEED = 20240601
STORIES = 6000
OUTPUT = Path(__file__).resolve().parent / "stories.txt"

NAMES = ["Mia", "Leo", "Ana", "Tom", "Sara", "Ben", "Lily", "Max", "Nora", "Sam", "Ella", "Finn", "Ruby", "Omar", "Ivy", "Jack"]
ANIMALS = ["cat", "dog", "rabbit", "duck", "fox", "bear", "mouse", "owl", "frog", "horse", "goat", "turtle"]
PLACES = ["the park", "the forest", "the beach", "the garden", "the market", "the farm", "the river", "the hill", "the school", "the old house"]
OBJECTS = ["a red ball", "a small box", "a blue kite", "a shiny stone", "a big map", "a wooden boat", "a yellow hat", "a lost key", "a little drum", "a green cup"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "quiet", "bright", "grey"]
FEELINGS = ["happy", "sad", "scared", "excited", "tired", "curious", "proud", "surprised"]
TIMES = ["One morning", "One day", "Last summer", "Early in the evening", "On a Sunday", "After lunch", "Before dinner"]
ADJECTIVES = ["kind", "brave", "shy", "funny", "clever", "gentle", "small", "busy"]
FOODS = ["apples", "bread", "soup", "cake", "carrots", "honey", "berries", "rice"]
PROBLEMS = [
    ("could not find {obj}", "found {obj} under a tree"),
    ("was stuck in the mud", "pulled hard and got out"),
    ("lost the way home", "followed the river back home"),
    ("dropped {obj} in the water", "used a long stick to get {obj} back"),
    ("was too small to reach {obj}", "stood on a box and reached {obj}"),
    ("heard a strange noise", "saw that it was only the wind"),
]
ENDINGS = [
    "From that day on, they were best friends.",
    "Then they went home and ate {food}.",
    "It was the best day of the whole year.",
    "They laughed and played until the sun went down.",
    "That night, {name} slept well and dreamed of {place}.",
    "Everyone said thank you, and {name} felt {feeling}.",
]


def story(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    animal = rng.choice(ANIMALS)
    place = rng.choice(PLACES)
    obj = rng.choice(OBJECTS)
    problem, solution = rng.choice(PROBLEMS)
    feeling = rng.choice(FEELINGS)
    sentences = [
        f"{rng.choice(TIMES)}, {name} went to {place}.",
        f"It was a {rng.choice(WEATHER)} day and {name} felt {rng.choice(FEELINGS)}.",
    ]
    if rng.random() < 0.7:
        sentences.append(f"At {place}, {name} met a {rng.choice(ADJECTIVES)} {animal}.")
        sentences.append(f'"Hello," said the {animal}. "My name is {friend}."')
        helper = f"the {animal}"
    else:
        sentences.append(f"{name} saw {friend}, who was {rng.choice(ADJECTIVES)} and liked {rng.choice(FOODS)}.")
        helper = friend
    sentences.append(f"But {helper} {problem.format(obj=obj)}.")
    sentences.append(f'"Can I help you?" asked {name}.')
    sentences.append(f"Together they {solution.format(obj=obj)}.")
    if rng.random() < 0.5:
        sentences.append(f"{helper[0].upper() + helper[1:]} was so {feeling} that {name} got some {rng.choice(FOODS)}.")
    sentences.append(rng.choice(ENDINGS).format(food=rng.choice(FOODS), name=name, place=place, feeling=feeling))
    return " ".join(sentences)


def corpus(seed: int = SEED, count: int = STORIES) -> str:
    rng = random.Random(seed)
    return "\n\n".join(story(rng) for _ in range(count)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = parser.parse_args()
    text = corpus()
    if args.check:
        same = OUTPUT.is_file() and OUTPUT.read_text(encoding="utf-8") == text
        print("stories.txt is up to date" if same else "stories.txt differs from the generator's output")
        return 0 if same else 1
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(text.encode())} bytes, {STORIES} stories)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
