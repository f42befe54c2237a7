#!/usr/bin/env python3
"""Reference outputs of transformers on the testbed (scripts/build_testbed.py), so that
test/testbed.test.ts can check the engine against transformers on a pretrained decoder
(dev-time; torch CPU + transformers 5.23).

    python scripts/make_testbed_fixtures.py --model DIR

Writes test/fixtures/testbed/references.json (per case: photo, question, prompt ids, greedy new
tokens up to 16, the decoded answer) and references.safetensors (each case's last-position logits,
`case<i>`), on the committed photos and the fixture scenes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import load_reference_stack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test" / "fixtures" / "testbed"
MAX_NEW_TOKENS = 16
CASES = [
    ("photos/chelsea.png", "What animal is this?"),
    ("photos/coffee.png", "Describe the picture in one sentence."),
    ("scenes/images/test-000000.png", "What color is the triangle?"),
]


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    processor, model = load_reference_stack(Path(args.model))
    cases, logits = [], {}
    for i, (image_file, question) in enumerate(CASES):
        image = Image.open(ROOT / "test" / "fixtures" / image_file).convert("RGB")
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        inputs = processor(images=image, text=processor.apply_chat_template(conv, add_generation_prompt=True), return_tensors="pt")
        logits[f"case{i}"] = model(**inputs).logits[0, -1].float().contiguous()
        out = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        cases.append({"image": image_file, "question": question, "inputIds": inputs["input_ids"][0].tolist(), "greedyTokens": new,
                      "answer": processor.tokenizer.decode(new, skip_special_tokens=True)})
        print(f"{image_file}: {question} -> {cases[-1]['answer']!r}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "references.json").write_text(json.dumps({"maxNewTokens": MAX_NEW_TOKENS, "cases": cases}) + "\n")
    save_file(logits, OUT / "references.safetensors")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
