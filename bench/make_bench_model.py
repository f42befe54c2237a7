#!/usr/bin/env python3
"""Build a realistic-size random-weight LLaVA checkpoint for benchmarks (NOT committed: bench/models/
is gitignored). Shapes of llava-hf/llava-interleave-qwen-0.5b-hf:

  vision: SigLIP so400m/14 at 384 px: hidden 1152, intermediate 4304, 27 layers, 16 heads,
          27x27 = 729 patches, gelu_pytorch_tanh, no pooling head
  text:   Qwen2-0.5B: hidden 896, intermediate 4864, 24 layers, 14 heads, 2 KV heads, vocab 151936,
          tied embeddings, rope_theta 1e6, q/k/v biases
  llava:  vision_feature_layer -1, strategy "full", projector gelu (1152 -> 896 -> 896)

Same widened random init, Qwen tokenizer (+ <image>), llava-interleave chat template and SigLIP
preprocessor as the siglip-qwen2 test fixture; saved in bfloat16 by save_pretrained.

    python bench/make_bench_model.py [--out bench/models/llava-qwen-0.5b-shape]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_fixtures as mf  # noqa: E402
from transformers import Qwen2Config, SiglipImageProcessor, SiglipVisionConfig  # noqa: E402


def spec_bench():
    spec = mf.spec_siglip_qwen2()
    spec.update(
        name="llava-qwen-0.5b-shape",
        max_shard_size="1GB",
        vision=SiglipVisionConfig(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
            vision_use_head=False,
        ),
        text_cls=Qwen2Config,
        text=dict(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
            hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
        ),
        vocab_pad_to=151936,
        image_processor=lambda: SiglipImageProcessor(
            size={"height": 384, "width": 384}, resample=3, do_resize=True, do_rescale=True,
            rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
            do_convert_rgb=True,
        ),
    )
    return spec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench/models/llava-qwen-0.5b-shape"))
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    t0 = time.time()
    n_img = mf.build_model(spec_bench(), args.seed, Path(args.out))
    size = sum(f.stat().st_size for f in Path(args.out).glob("*.safetensors"))
    print(f"built {args.out}: {n_img} image tokens, {size / 1e9:.2f} GB of bf16 weights, "
          f"took {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
