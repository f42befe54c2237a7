#!/usr/bin/env python3
"""Reference outputs of transformers on the shipped model (models/default) for every question the
fixture scenes admit (test/fixtures/scenes/scenes.json), so that `npm test` checks the engine
against transformers on the model users actually get (dev-time; torch CPU + transformers 5.23).

    python scripts/make_default_model_fixtures.py [--model models/default]

Writes test/fixtures/scenes/default-model-references.json: per question the prompt ids, the greedy
new tokens (stopping at EOS, at most 4), the decoded answer, the ground truth, and the logits at
the last prompt position.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import load_reference_stack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENES = ROOT / "test" / "fixtures" / "scenes"
MAX_NEW_TOKENS = 4


@torch.no_grad()
def reference(processor, model, image: Image.Image, question: str):
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    last_logits = model(**inputs).logits[0, -1].float()
    out = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    text = processor.tokenizer.decode(new, skip_special_tokens=True).strip()
    return inputs["input_ids"][0].tolist(), new, text, [round(x, 6) for x in last_logits.tolist()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--out", default=str(SCENES / "default-model-references.json"))
    args = ap.parse_args()
    processor, model = load_reference_stack(Path(args.model))
    cases = []
    for scene in json.loads((SCENES / "scenes.json").read_text()):
        image = Image.open(SCENES / scene["image"]).convert("RGB")
        for q in scene["questions"]:
            ids, new, text, logits = reference(processor, model, image, q["question"])
            cases.append({"image": scene["image"], "question": q["question"], "type": q["type"], "truth": q["answer"],
                          "inputIds": ids, "greedyTokens": new, "answer": text, "lastLogits": logits})
    right = sum(c["answer"] == c["truth"] for c in cases)
    Path(args.out).write_text(json.dumps({"model": "models/default", "maxNewTokens": MAX_NEW_TOKENS, "cases": cases}) + "\n")
    print(f"wrote {args.out}: {len(cases)} questions, transformers answers {right} correctly")


if __name__ == "__main__":
    main()
