#!/usr/bin/env python3
"""The image tokens each single-object question is about, for measuring whether a policy's kept
tokens follow the question (dev-time; see scripts/token-focus.mjs).

    python scripts/question_targets.py --data /tmp/small-vlm-scenes/test --out /tmp/targets.jsonl

Reads DIR/questions.jsonl and DIR/meta.json (written by scenes.py / train_small_vlm.py), rebuilds
each scene from its seed, and for the color, shape and side questions writes the question with
`target` (row-major indices of the 16x16 patches whose centre lies inside the object the question
names) and `objects` (the same for every object in the scene).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402
from train_small_vlm import object_masks  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a split folder: questions.jsonl, meta.json, images/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    d = Path(args.data)
    meta = json.loads((d / "meta.json").read_text())
    out = []
    for line in (d / "questions.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["type"] not in ("color", "shape", "side"):
            continue
        index = int(Path(r["image"]).stem)
        per_image = meta.get("per_image", 1)
        types = [scenes.TYPES[(index + k) % len(scenes.TYPES)] for k in range(per_image)]
        scene, _, _ = scenes.make_item(args.split, meta["seed"], index, types, meta["size"])
        words = set(r["question"].lower().rstrip("?").split())
        named = [i for i, o in enumerate(scene.objects) if o.shape in words or o.color in words]
        assert len(named) == 1, (r, named)
        masks = [np.flatnonzero(m.reshape(-1)).tolist() for m in object_masks(scene)]
        out.append({**r, "image": str(d / r["image"]), "target": masks[named[0]], "objects": masks})
    Path(args.out).write_text("".join(json.dumps(x) + "\n" for x in out))
    print(f"wrote {args.out}: {len(out)} questions")


if __name__ == "__main__":
    main()
