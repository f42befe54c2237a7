#!/usr/bin/env python3
"""Synthetic "scenes" for the shipped small VLM: coloured shapes on a light textured background,
with one-word-answer questions about them. Seeded and reproducible; the data is generated, not
committed.

    python scripts/scenes.py --out data/scenes --split test --count 1000 [--seed 0] [--per-image 1] [--size 224]

writes DIR/<split>/images/000000.png ... and DIR/<split>/questions.jsonl, one line per question:
    {"image": "images/000123.png", "question": "What color is the circle?", "answer": "red", "type": "color"}
and DIR/<split>/targets.jsonl, the same lines' pixel boxes [x0, y0, x1, y1] of the objects each
question names (every object for list and describe; none when it names an absent one):
    {"image": "images/000123.png", "question": "What color is the circle?", "boxes": [[40.2, 61.0, 90.6, 111.4]]}

Scenes: 2-6 non-overlapping objects, shape in {circle, square, triangle}, colour in {red, green,
blue, yellow}, sizes from ~28 to ~70 px across (at 224 px), random positions, small rotations of
squares and triangles, anti-aliased edges; the background is a light, slightly tinted gradient with
low-frequency blotches and pixel noise; the objects carry colour jitter and noise too.

Question types (answers are one lowercase word):
    color   What color is the {shape}?          only if exactly one object has that shape
    shape   What shape is the {color} object?   only if exactly one object has that colour
    count   How many {shape}s are there?        a digit 0-6; 0 is included (a shape absent from the
                                                scene, about 1 in 7 count questions), since "how many"
                                                questions about absent things are natural and the
                                                exists questions ask about absent things as well
    exists  Is there a {color} {shape}?         yes/no, 50/50; half of the "no" cases are near
                                                misses (that colour or that shape is in the scene)
    side    Which side is the {shape} on?       left/right; only if exactly one object has that shape
                                                and its centre is >= 10% of the width off the middle

Multi-word question types (MULTI_TYPES, asked only with --types; for the pretrained-LLM testbed,
where decoding has several tokens for core neurons to act on):
    list      List the shapes from left to right.   "red circle, blue square, green triangle"
                                                    (by centre x; only when no two centres are
                                                    within 5% of the width)
    describe  Describe the scene in one sentence.   "There are three objects: two circles and one
                                                    triangle." (shapes in circle, square, triangle
                                                    order)

Splits: every image's random stream is numpy's default_rng([SPLIT_ID[split], seed, index]), so the
train/val/test streams are disjoint by construction (different SeedSequence entropy); the test
split is never used for training or checkpoint selection. In the files, image i is asked question
type TYPES[(i + k) % 5] for k < per-image (a scene is redrawn, within the same stream, until it
admits that type), so the types are exactly balanced. The trainer (train_small_vlm.py) imports
make_scene / all_questions and draws its own train stream the same way.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLORS = ["red", "green", "blue", "yellow"]
TYPES = ["color", "shape", "count", "exists", "side"]
MULTI_TYPES = ["list", "describe"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six"]
SPLIT_ID = {"train": 101, "val": 202, "test": 303}
MAX_OBJECTS = 6

# base RGB per colour name; each object jitters it
BASE_RGB = {
    "red": (215, 40, 35),
    "green": (40, 165, 55),
    "blue": (40, 75, 215),
    "yellow": (235, 200, 25),
}
TRI_R = 1.45  # triangle circumradius / size: about the area of the circle and the square
SS = 4  # supersampling factor for anti-aliased shape edges


@dataclass
class Obj:
    shape: str
    color: str
    cx: float  # centre, pixels
    cy: float
    size: float  # "radius": circle radius; the square / triangle are scaled to a similar area
    angle: float  # degrees (squares and triangles)


@dataclass
class Scene:
    size: int
    objects: list[Obj] = field(default_factory=list)

    def with_shape(self, shape):
        return [o for o in self.objects if o.shape == shape]

    def with_color(self, color):
        return [o for o in self.objects if o.color == color]

    def has(self, color, shape):
        return any(o.color == color and o.shape == shape for o in self.objects)


def _bound_radius(o: Obj) -> float:
    if o.shape == "circle":
        return o.size
    if o.shape == "square":
        return o.size * 0.9 * math.sqrt(2)
    return o.size * TRI_R * 1.146  # triangle: farthest point of its bbox-centred vertices


def sample_layout(rng: np.random.Generator, size: int, n: int | None = None) -> Scene:
    """2-6 objects with random shape/colour/size/position, rejection-sampled to not overlap."""
    s = size / 224.0
    while True:
        n_obj = int(rng.integers(2, MAX_OBJECTS + 1)) if n is None else n
        scene = Scene(size)
        ok = True
        for _ in range(n_obj):
            shape = SHAPES[int(rng.integers(3))]
            color = COLORS[int(rng.integers(4))]
            radius = float(rng.uniform(14, 33)) * s
            for _attempt in range(60):
                o = Obj(shape, color, 0, 0, radius, float(rng.uniform(-15, 15)))
                br = _bound_radius(o)
                margin = 3 * s
                if 2 * (br + margin) >= size:
                    break
                o.cx = float(rng.uniform(br + margin, size - br - margin))
                o.cy = float(rng.uniform(br + margin, size - br - margin))
                if all(math.hypot(o.cx - p.cx, o.cy - p.cy) > br + _bound_radius(p) + 4 * s for p in scene.objects):
                    scene.objects.append(o)
                    break
                radius *= 0.97  # crowded: shrink a little and retry
            else:
                ok = False
                break
        if ok and len(scene.objects) == n_obj:
            return scene


def _polygon(o: Obj, k: float):
    """Vertices (supersampled coordinates) of a square or an upright equilateral triangle, rotated."""
    if o.shape == "square":
        h = o.size * 0.9
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    else:
        r = o.size * TRI_R  # circumradius
        pts = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in (-90, 30, 150)]
        # vertices at y = -r, r/2, r/2 about the centroid: shift by r/4 so the bbox is centred
        pts = [(x, y + r * 0.25) for x, y in pts]
    c, sn = math.cos(math.radians(o.angle)), math.sin(math.radians(o.angle))
    return [((o.cx + x * c - y * sn) * k, (o.cy + x * sn + y * c) * k) for x, y in pts]


def _upsample(a: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    size = scene.size
    # background: a light tinted gradient + low-frequency blotches + pixel noise
    base = rng.uniform(205, 245)
    tint = rng.uniform(-10, 10, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, 2 * math.pi)
    grad = (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)) * rng.uniform(0, 24)
    bg = np.empty((size, size, 3), np.float32)
    cells = int(rng.integers(3, 9))
    blot_amp = rng.uniform(2, 10)
    for ch in range(3):
        blot = _upsample(rng.normal(0, 1, (cells, cells)), size) * blot_amp
        bg[..., ch] = base + tint[ch] + grad + blot
    # occasional faint texture: stripes or speckles
    tex = rng.integers(3)
    if tex == 1:
        freq = rng.uniform(8, 30)
        phase = rng.uniform(0, 2 * math.pi)
        bg += (np.sin(2 * math.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang)) + phase) * rng.uniform(2, 6))[..., None]
    elif tex == 2:
        speck = (rng.random((size, size)) < 0.01) * rng.uniform(-25, -10)
        bg += speck[..., None]
    img = bg.astype(np.float32)
    # objects: supersampled coverage masks over each object's bounding box, composited in order
    # (they do not overlap)
    k = SS
    for o in scene.objects:
        br = _bound_radius(o) + 2
        x0, y0 = max(0, int(o.cx - br)), max(0, int(o.cy - br))
        x1, y1 = min(size, int(math.ceil(o.cx + br))), min(size, int(math.ceil(o.cy + br)))
        w, h = x1 - x0, y1 - y0
        mask = Image.new("L", (w * k, h * k), 0)
        d = ImageDraw.Draw(mask)
        if o.shape == "circle":
            d.ellipse([(o.cx - o.size - x0) * k, (o.cy - o.size - y0) * k,
                       (o.cx + o.size - x0) * k, (o.cy + o.size - y0) * k], fill=255)
        else:
            d.polygon([(x - x0 * k, y - y0 * k) for x, y in _polygon(o, k)], fill=255)
        m = np.asarray(mask.resize((w, h), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255.0
        rgb = np.array(BASE_RGB[o.color], np.float32) + rng.normal(0, 12, 3).astype(np.float32)
        # slight shading across the object
        sx, sy = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)
        shade = 1.0 + ((xx[y0:y1, x0:x1] - o.cx / size) * sx + (yy[y0:y1, x0:x1] - o.cy / size) * sy)[..., None]
        win = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = win * (1 - m) + np.clip(rgb * shade, 0, 255) * m
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 7))
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------------------------
# questions


def side_of(o: Obj, size: int) -> str | None:
    off = o.cx - size / 2
    if abs(off) < 0.1 * size:
        return None
    return "left" if off < 0 else "right"


def q_color(scene, rng):
    shapes = [s for s in SHAPES if len(scene.with_shape(s)) == 1]
    if not shapes:
        return None
    s = shapes[int(rng.integers(len(shapes)))]
    return f"What color is the {s}?", scene.with_shape(s)[0].color


def q_shape(scene, rng):
    colors = [c for c in COLORS if len(scene.with_color(c)) == 1]
    if not colors:
        return None
    c = colors[int(rng.integers(len(colors)))]
    return f"What shape is the {c} object?", scene.with_color(c)[0].shape


def q_count(scene, rng):
    present = [s for s in SHAPES if scene.with_shape(s)]
    absent = [s for s in SHAPES if not scene.with_shape(s)]
    if absent and rng.random() < 1 / 7:
        s = absent[int(rng.integers(len(absent)))]
    else:
        s = present[int(rng.integers(len(present)))]
    return f"How many {s}s are there?", str(len(scene.with_shape(s)))


def q_exists(scene, rng):
    if rng.random() < 0.5:
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        return f"Is there a {o.color} {o.shape}?", "yes"
    absent = [(c, s) for c in COLORS for s in SHAPES if not scene.has(c, s)]
    if rng.random() < 0.5:  # near miss: the colour or the shape is in the scene
        near = [(c, s) for c, s in absent if scene.with_color(c) or scene.with_shape(s)]
        if near:
            absent = near
    c, s = absent[int(rng.integers(len(absent)))]
    return f"Is there a {c} {s}?", "no"


def q_side(scene, rng):
    cands = [s for s in SHAPES if len(scene.with_shape(s)) == 1 and side_of(scene.with_shape(s)[0], scene.size)]
    if not cands:
        return None
    s = cands[int(rng.integers(len(cands)))]
    return f"Which side is the {s} on?", side_of(scene.with_shape(s)[0], scene.size)


def q_list(scene, rng):
    xs = sorted(scene.objects, key=lambda o: o.cx)
    if any(b.cx - a.cx < 0.05 * scene.size for a, b in zip(xs, xs[1:])):
        return None
    return "List the shapes from left to right.", ", ".join(f"{o.color} {o.shape}" for o in xs)


def _and(parts):
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def q_describe(scene, rng):
    counts = [(s, len(scene.with_shape(s))) for s in SHAPES if scene.with_shape(s)]
    parts = [f"{NUMBER_WORDS[n]} {s}{'s' if n > 1 else ''}" for s, n in counts]
    return "Describe the scene in one sentence.", f"There are {NUMBER_WORDS[len(scene.objects)]} objects: {_and(parts)}."


QUESTION_FNS = {"color": q_color, "shape": q_shape, "count": q_count, "exists": q_exists, "side": q_side,
                "list": q_list, "describe": q_describe}


def ask(scene: Scene, qtype: str, rng: np.random.Generator):
    """(question, answer) of that type, or None when the scene does not admit it."""
    return QUESTION_FNS[qtype](scene, rng)


def all_questions(scene: Scene, rng: np.random.Generator):
    """One question per admissible type: [(type, question, answer), ...] in TYPES order."""
    out = []
    for t in TYPES:
        qa = ask(scene, t, rng)
        if qa is not None:
            out.append((t, qa[0], qa[1]))
    return out


def make_scene(rng: np.random.Generator, size: int = 224, n: int | None = None):
    scene = sample_layout(rng, size, n)
    return scene, render(scene, rng)


def image_rng(split: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([SPLIT_ID[split], seed, index])


def make_item(split: str, seed: int, index: int, types: list[str], size: int = 224):
    """Image `index` of a split file: a scene that admits every type in `types`, one question each."""
    rng = image_rng(split, seed, index)
    while True:
        scene = sample_layout(rng, size)
        qas = [ask(scene, t, rng) for t in types]
        if all(qa is not None for qa in qas):
            return scene, render(scene, rng), [(t, q, a) for t, (q, a) in zip(types, qas)]


def write_split(out: Path, split: str, count: int, seed: int, per_image: int, size: int, kinds: list[str] = TYPES):
    d = out / split
    (d / "images").mkdir(parents=True, exist_ok=True)
    lines, targets = [], []
    for i in range(count):
        types = [kinds[(i + k) % len(kinds)] for k in range(per_image)]
        scene, img, qas = make_item(split, seed, i, types, size)
        name = f"images/{i:06d}.png"
        img.save(d / name, optimize=False)
        for t, q, a in qas:
            lines.append({"image": name, "question": q, "answer": a, "type": t})
            targets.append({"image": name, "question": q, "boxes": [bounding_box(o) for o in named_objects(scene, q)]})
    (d / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (d / "targets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in targets))
    return lines


def named_objects(scene: Scene, question: str) -> list[Obj]:
    """The objects a question is about: those with every colour and shape it names (all of them
    when it names none, as list and describe do). Empty when it names an absent object."""
    words = set(question.lower().rstrip("?.").replace("s ", " ").split())
    colors = [c for c in COLORS if c in words]
    shapes = [s for s in SHAPES if s in words or s + "s" in question.lower()]
    return [o for o in scene.objects if (not colors or o.color in colors) and (not shapes or o.shape in shapes)]


def bounding_box(o: Obj) -> list[float]:
    """[x0, y0, x1, y1] in pixels: a square around the object's farthest point from its centre."""
    r = _bound_radius(o)
    return [round(o.cx - r, 1), round(o.cy - r, 1), round(o.cx + r, 1), round(o.cy + r, 1)]


def every_question(scene: Scene):
    """Every question of the five forms that the scene admits, with its answer (no sampling):
    [(type, question, answer), ...]. Used for the small committed fixture set."""
    out = []
    for s in SHAPES:
        if len(scene.with_shape(s)) == 1:
            out.append(("color", f"What color is the {s}?", scene.with_shape(s)[0].color))
    for c in COLORS:
        if len(scene.with_color(c)) == 1:
            out.append(("shape", f"What shape is the {c} object?", scene.with_color(c)[0].shape))
    for s in SHAPES:
        out.append(("count", f"How many {s}s are there?", str(len(scene.with_shape(s)))))
    for c in COLORS:
        for s in SHAPES:
            out.append(("exists", f"Is there a {c} {s}?", "yes" if scene.has(c, s) else "no"))
    for s in SHAPES:
        if len(scene.with_shape(s)) == 1 and side_of(scene.with_shape(s)[0], scene.size):
            out.append(("side", f"Which side is the {s} on?", side_of(scene.with_shape(s)[0], scene.size)))
    return out


def write_fixtures(out: Path, split: str, count: int, seed: int, size: int):
    """The first `count` images of a split file (per-image 1) as a flat fixture folder: images/*.png,
    questions.jsonl (the split's own lines, same format) and scenes.json (objects + every question)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines, meta = [], []
    for i in range(count):
        t = TYPES[i % len(TYPES)]
        scene, img, qas = make_item(split, seed, i, [t], size)
        name = f"images/{split}-{i:06d}.png"
        img.save(out / name, optimize=True)
        _, q, a = qas[0]
        lines.append({"image": name, "question": q, "answer": a, "type": t})
        meta.append({
            "image": name, "split": split, "seed": seed, "index": i,
            "objects": [{"shape": o.shape, "color": o.color, "cx": round(o.cx, 1), "cy": round(o.cy, 1),
                         "size": round(o.size, 1)} for o in scene.objects],
            "questions": [{"type": t, "question": q, "answer": a} for t, q, a in every_question(scene)],
        })
    (out / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (out / "scenes.json").write_text(json.dumps(meta, indent=1) + "\n")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (DIR/<split>/ is written)")
    ap.add_argument("--split", required=True, choices=list(SPLIT_ID))
    ap.add_argument("--count", type=int, required=True, help="number of images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-image", type=int, default=1, choices=range(1, len(TYPES + MULTI_TYPES) + 1),
                    help="questions per image, of consecutive types (default 1)")
    ap.add_argument("--types", default=",".join(TYPES),
                    help=f"question types, comma-separated, cycled over the images (default {','.join(TYPES)}; "
                         f"also {','.join(MULTI_TYPES)})")
    ap.add_argument("--size", type=int, default=224, help="image width = height in pixels (default 224)")
    ap.add_argument("--fixtures", action="store_true",
                    help="write the first --count images flat into --out (images/<split>-NNNNNN.png, "
                         "questions.jsonl, scenes.json with objects and every admissible question)")
    args = ap.parse_args()
    if args.fixtures:
        for r in write_fixtures(Path(args.out), args.split, args.count, args.seed, args.size):
            print(r)
        return
    kinds = args.types.split(",")
    unknown = [t for t in kinds if t not in QUESTION_FNS]
    if unknown:
        ap.error(f"unknown question types {unknown}; expected some of {list(QUESTION_FNS)}")
    lines = write_split(Path(args.out), args.split, args.count, args.seed, args.per_image, args.size, kinds)
    by_type = {}
    for r in lines:
        by_type.setdefault(r["type"], {}).setdefault(r["answer"], 0)
        by_type[r["type"]][r["answer"]] += 1
    print(f"{len(lines)} questions on {args.count} images -> {Path(args.out) / args.split}")
    for t in kinds:
        if t in by_type and t not in MULTI_TYPES:
            print(f"  {t}: " + ", ".join(f"{a}={n}" for a, n in sorted(by_type[t].items())))


if __name__ == "__main__":
    main()
