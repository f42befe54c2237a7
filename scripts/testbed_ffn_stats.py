#!/usr/bin/env python3
"""What the testbed's fine-tuning did to the decoder that CoreMatching reads (dev-time; see
docs/testbed.md).

    python scripts/testbed_ffn_stats.py [--trained FILE] [--wheel FILE] [--images 24] [--json OUT]

Builds the testbed twice from the same trained file: "before" with SmolLM2's decoder exactly
(the adapters left out), "after" with the LoRA adapters merged, as build_testbed.py builds it.
Prints, per kind of decoder matrix, how far the merge moved it (relative Frobenius norm
||W_after - W_before|| / ||W_before||, mean and max over layers), and, on the same prompts
(validation scenes, one question of each type per image, the trained tower's image tokens in both),
the FFN activation statistics CoreMatching rests on, per layer and for image and text tokens
apart: the share of neurons with a = act(gate) * up > 0 per token, and the share of sum |a|
carried by each token's top 10% of neurons.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402
from build_testbed import TRAINED_TOWER, assemble, read_trained  # noqa: E402
from train_testbed import ALL_TYPES  # noqa: E402

MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def moved(before, after) -> dict[str, dict[str, float]]:
    """Per matrix kind: mean and max over layers of the relative Frobenius norm of the change."""
    b = dict(before.model.language_model.named_parameters())
    a = dict(after.model.language_model.named_parameters())
    out = {}
    for kind in MATRICES:
        rel = [float((a[n] - w).norm() / w.norm()) for n, w in b.items() if n.endswith(f"{kind}.weight")]
        out[kind] = {"mean": sum(rel) / len(rel), "max": max(rel)}
    return out


@torch.no_grad()
def activation_stats(model, processor, prompts) -> list[dict[str, dict[str, float]]]:
    """Per layer, for image and text tokens: mean share of positive activations per token, and
    mean share of sum |a| in the top 10% of neurons per token."""
    layers = model.model.language_model.layers
    captured: dict[int, torch.Tensor] = {}
    hooks = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, args, l=l: captured.__setitem__(l, args[0][0].detach()))
             for l, layer in enumerate(layers)]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    sums = [{kind: [0.0, 0.0, 0] for kind in ("image", "text")} for _ in layers]
    for image, question in prompts:
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        inputs = processor(images=image, text=processor.apply_chat_template(conv, add_generation_prompt=True), return_tensors="pt")
        is_image = inputs["input_ids"][0] == image_id
        model(**inputs)
        for l, a in captured.items():
            d = a.shape[-1]
            positive = (a > 0).float().mean(-1)
            mag = a.abs()
            top = mag.topk(max(1, d // 10), dim=-1).values.sum(-1) / mag.sum(-1).clamp_min(1e-30)
            for kind, rows in (("image", is_image), ("text", ~is_image)):
                s = sums[l][kind]
                s[0] += float(positive[rows].sum())
                s[1] += float(top[rows].sum())
                s[2] += int(rows.sum())
    for h in hooks:
        h.remove()
    return [{kind: {"positive": s[0] / s[2], "top10": s[1] / s[2]} for kind, s in layer.items()} for layer in sums]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trained", default=str(TRAINED_TOWER))
    ap.add_argument("--wheel")
    ap.add_argument("--images", type=int, default=24, help="validation scenes (seed 0), one question of each admissible type each")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    tensors, scale = read_trained(args.trained)
    if scale is None:
        sys.exit(f"{args.trained} holds no LoRA adapters: the decoder is SmolLM2's exactly")
    wheel = Path(args.wheel) if args.wheel else None
    before, processor = assemble(wheel, {k: v for k, v in tensors.items() if ".lora_" not in k})
    after, _ = assemble(wheel, tensors, lora_scale=scale)
    prompts = []
    for i in range(args.images):
        rng = scenes.image_rng("val", 0, i)
        scene = scenes.sample_layout(rng, 224)
        qas = [qa for t in ALL_TYPES if (qa := scenes.ask(scene, t, rng)) is not None]
        image = scenes.render(scene, rng)
        prompts += [(image, q) for q, _ in qas]
    delta = moved(before, after)
    stats = {"before": activation_stats(before.eval(), processor, prompts), "after": activation_stats(after.eval(), processor, prompts)}

    print(f"{len(prompts)} prompts from {args.images} validation images\n")
    print("| matrix | relative change, mean over layers | max |\n|---|---|---|")
    for kind, r in delta.items():
        print(f"| {kind} | {r['mean']:.4f} | {r['max']:.4f} |")
    print("\n| layers | tokens | positive a, before | after | top 10% share of sum abs(a), before | after |\n|---|---|---|---|---|---|")
    n = len(stats["before"])
    spans = [(0, 2), (2, 8), (8, 16), (16, 24), (24, n), (0, n)]
    for lo, hi in spans:
        for kind in ("image", "text"):
            mean = lambda when, key: sum(stats[when][l][kind][key] for l in range(lo, hi)) / (hi - lo)  # noqa: E731
            print(f"| {lo}-{hi - 1} | {kind} | {100 * mean('before', 'positive'):.1f}% | {100 * mean('after', 'positive'):.1f}% | "
                  f"{100 * mean('before', 'top10'):.1f}% | {100 * mean('after', 'top10'):.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": len(prompts), "moved": delta, **stats}, indent=1) + "\n")


if __name__ == "__main__":
    main()
