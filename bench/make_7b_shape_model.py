#!/usr/bin/env python3
"""Build a random-weight checkpoint with the exact shapes of llava-hf/llava-1.5-7b-hf, for the
7B rows of the benchmark (NOT committed: bench/models/ is gitignored; about 14 GB):

  vision: CLIP ViT-L/14 at 336 px: hidden 1024, intermediate 4096, 24 layers, 16 heads,
          quick_gelu, 577 positions; vision_feature_layer -2, strategy "default" -> 576 image tokens
  text:   LLaMA-7B: hidden 4096, intermediate 11008, 32 layers, 32 heads (no GQA), vocab 32064
          (llava-1.5's padded embedding), untied LM head, rope_theta 1e4
  llava:  projector gelu (1024 -> 4096 -> 4096)

Never holds the model: the model is made on PyTorch's meta device for its tensor names and
shapes, then each tensor is drawn (N(0, 1/fan_in) for matrices, 1 for norm weights, 0 for biases,
seeded per tensor) and written in BF16 shards of about 2 GB, one shard in memory at a time, with
model.safetensors.index.json. Tokenizer (LLaMA's 32k vocabulary + <image>, <pad>), chat template
and CLIP preprocessor as the clip-llama test fixture.

    python bench/make_7b_shape_model.py [--out bench/models/llava-1.5-7b-shape]
"""
import argparse
import json
import math
import shutil
import sys
import time
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_fixtures as mf  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor, CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig,
    LlavaForConditionalGeneration, LlavaProcessor,
)

SHARD_BYTES = 2 * 1024**3


def config_and_tokenizer():
    spec = mf.spec_clip_llama()
    tok = mf.build_tokenizer(spec)
    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    )
    text = LlamaConfig(
        vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )
    config.architectures = ["LlavaForConditionalGeneration"]  # what save_pretrained of a model writes
    return spec, tok, config


def draw(name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if len(shape) == 1 and "norm" in name:
        return torch.ones(shape, dtype=torch.bfloat16)
    fan_in = shape[1:].numel() if len(shape) > 1 else shape[0]
    std = 0.5 if name.endswith("class_embedding") else 1 / math.sqrt(fan_in)
    return (torch.randn(shape, generator=g, dtype=torch.float32) * std).to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench/models/llava-1.5-7b-shape"))
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.out)
    spec, tok, config = config_and_tokenizer()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlavaForConditionalGeneration(config).state_dict().items()}

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = shape.numel() * 2
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: draw(n, shapes[n], args.seed) for n in names}
        save_file(tensors, out / file, metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({n: file for n in names})
        del tensors
        print(f"  wrote {file} ({len(names)} tensors)", flush=True)
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")

    config.save_pretrained(out)
    GenerationConfig(do_sample=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_center_crop=True,
            resample=3, do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
            do_convert_rgb=True,
        ),
        tokenizer=tok, chat_template=spec["template"], patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    processor.save_pretrained(out)
    print(f"built {out}: {total / 1e9:.2f} GB of bf16 weights in {len(shards)} shards, took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
