#!/usr/bin/env python3
"""Time PyTorch + transformers on a LLaVA checkpoint the way its users run it (CPU, float32,
greedy generate), to compare the engine against.

IMPORTANT: this machine's shell sets OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE), which roughly halves
PyTorch's CPU speed. This script does not touch the environment itself; unset them for this
command only:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/pytorch_bench.py \
        --model bench/models/llava-qwen-0.5b-shape --image test/fixtures/photos/chelsea.png \
        --prompt "What is shown in this image?" --new-tokens 32 --threads 2 --json bench/results/pytorch.json

Measured (medians over --repeats after one warm-up):
  vision_s          model.get_image_features(pixel_values): vision tower + projector
  vision_prefill_s  model.generate(max_new_tokens=1): vision + prefill + 1 sampled token
  decode_tok_s      (N-1) / (t(generate N tokens) - t(generate 1 token)), EOS disabled
  preprocess_s      processor(images=..., text=...) (PIL image processor + tokenizer), not in the above
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch
from PIL import Image
import transformers
from transformers import AutoProcessor, LlavaForConditionalGeneration


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--prompt", default="What is shown in this image?")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    env_flags = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    load_start = os.getloadavg()
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} | transformers {transformers.__version__}")
    print(f"OPENBLAS_CORETYPE set: {env_flags['OPENBLAS_CORETYPE'] is not None} ({env_flags['OPENBLAS_CORETYPE']})"
          + ("  <- WARNING: halves PyTorch CPU speed; run with env -u OPENBLAS_CORETYPE" if env_flags["OPENBLAS_CORETYPE"] else ""))

    t_load, model = timed(lambda: LlavaForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval())
    processor = AutoProcessor.from_pretrained(args.model, backend="pil")
    # plain greedy, never stop early
    model.generation_config.eos_token_id = None
    model.generation_config.do_sample = False
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = Image.open(args.image)
    t_pre, inputs = timed(lambda: processor(images=image, text=prompt, return_tensors="pt"))
    n_prompt = inputs["input_ids"].shape[1]
    n_img = int((inputs["input_ids"] == model.config.image_token_id).sum())
    cfg = model.config
    print(f"loaded in {t_load:.1f}s; prompt {n_prompt} tokens ({n_img} image tokens); preprocess {t_pre*1e3:.0f} ms")

    def vision():
        return model.get_image_features(pixel_values=inputs["pixel_values"],
                                        vision_feature_layer=cfg.vision_feature_layer,
                                        vision_feature_select_strategy=cfg.vision_feature_select_strategy)

    def gen(n):
        return model.generate(**inputs, do_sample=False, max_new_tokens=n, min_new_tokens=n)

    with torch.inference_mode():
        vision(); gen(2)  # warm-up
        vis, pre, full = [], [], []
        for r in range(args.repeats):
            vis.append(timed(vision)[0])
            pre.append(timed(lambda: gen(1))[0])
            t, out = timed(lambda: gen(args.new_tokens))
            assert out.shape[1] - n_prompt == args.new_tokens
            full.append(t)
            print(f"  repeat {r}: vision {vis[-1]:.2f}s  vision+prefill {pre[-1]:.2f}s  {args.new_tokens} tokens {t:.2f}s")
    med = statistics.median
    dec = [(args.new_tokens - 1) / (f - p) for f, p in zip(full, pre)]
    res = {
        "model": os.path.abspath(args.model), "image": args.image, "prompt": args.prompt,
        "prompt_tokens": n_prompt, "image_tokens": n_img, "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "vision_s": med(vis), "vision_prefill_s": med(pre),
        "decode_tok_s": (args.new_tokens - 1) / (med(full) - med(pre)),
        "decode_tok_s_per_repeat_median": med(dec),
        "generate_total_s": med(full), "preprocess_s": t_pre, "load_s": t_load,
        "raw": {"vision_s": vis, "vision_prefill_s": pre, "generate_total_s": full},
        "dtype": "float32", "torch": torch.__version__, "transformers": transformers.__version__,
        "env": env_flags, "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
    }
    print(f"\nload average (1/5/15 min) at start {load_start}, at end {res['loadavg_end']}: "
          "anything above ~0.5 means other processes shared the 2 cores")
    print(f"| {'measure':<24} | {'median':>10} |")
    print(f"|{'-'*26}|{'-'*12}|")
    print(f"| {'vision (s)':<24} | {res['vision_s']:>10.2f} |")
    print(f"| {'vision+prefill (s)':<24} | {res['vision_prefill_s']:>10.2f} |")
    print(f"| {'decode (tokens/s)':<24} | {res['decode_tok_s']:>10.2f} |")
    print(f"| {'generate %d tokens (s)' % args.new_tokens:<24} | {res['generate_total_s']:>10.2f} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
