#!/usr/bin/env python3
"""Train the small LLaVA-style VLM that ships as models/default/ (dev-time; PyTorch CPU, seeded).

    bash scripts/train_default_model.sh                   # the shipped model: five runs of this script
    python scripts/train_small_vlm.py --out /tmp/smoke --steps 60 --eval-every 30  # smoke run
    python scripts/train_small_vlm.py --eval-only models/default --test-count 1000 # test accuracy

Model: LlavaForConditionalGeneration from transformers configs. CLIP vision tower (224 px, patch 14
-> 16x16 = 256 patch tokens + CLS, quick_gelu, pre-LN), vision_feature_layer -2, strategy "default"
(CLS dropped, 256 image tokens), 2-layer GELU projector, LLaMA decoder (SwiGLU, RoPE, RMSNorm,
untied lm_head), word-level tokenizer (tokenizers WordLevel, Lowercase normalizer, BERT
whitespace/punctuation pre-tokenizer, "<s> $A" post-processor), CLIPImageProcessor (shortest edge
224, center crop 224, CLIP mean/std), LLaVA-1.5 chat template "USER: <image>\\n{question} ASSISTANT:".

Data: scenes.py's train stream (default_rng([101, seed, i]) per image), rendered on the fly; the val
split (its own stream) picks the checkpoint; the test split is only used by --eval-only / the final
evaluation. Each training image carries several questions packed into one sequence:

    <s> user : <image>*256 | q1 ... assistant : A1 </s> | q2 ... assistant : A2 </s> | ...

with a block attention mask: every question segment sees the shared prefix (BOS, "USER:", the image
tokens) and itself only, and its position ids restart right after the prefix. Each segment is
therefore exactly the single-turn prompt the processor builds at inference ("USER: <image>\\n{q}
ASSISTANT:"), and the vision tower and the 259-token prefix are paid once for ~7 questions. The loss
is cross-entropy on the answer token and the EOS after it only.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

ROOT = Path(__file__).resolve().parent.parent

# llava-hf/llava-1.5-7b-hf chat template (verbatim, as in make_fixtures.py). Renders
# "USER: <image>\n{question} ASSISTANT:".
LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] "
    "!= 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
# every word the scene questions and answers use, plus a few near variants so that rephrased
# questions do not all collapse into <unk> (the model is only trained on the scenes.py forms)
WORDS = (
    ["user", "assistant", "system", ":", "?", ".", ",", "!", "'", "s"]
    + ["what", "color", "colour", "is", "the", "shape", "object", "how", "many", "are", "there", "which",
       "side", "on", "a", "an", "of", "in", "image", "picture", "this", "it", "and", "or", "does", "do",
       "have", "has", "any", "objects", "shapes", "colors", "number", "count", "left", "right", "yes", "no"]
    + scenes.SHAPES + [s + "s" for s in scenes.SHAPES] + scenes.COLORS + [str(i) for i in range(10)]
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {}
    for w in SPECIALS + WORDS:
        if w not in vocab:
            vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=4096, padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return tok


def build_processor(tok):
    ip = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_center_crop=True, resample=3,
        do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=CLIP_MEAN,
        image_std=CLIP_STD, do_convert_rgb=True,
    )
    return LlavaProcessor(image_processor=ip, tokenizer=tok, chat_template=LLAVA15_TEMPLATE, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def build_model(args, tok) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        hidden_size=args.v_hidden, intermediate_size=args.v_hidden * 4, num_hidden_layers=args.v_layers,
        num_attention_heads=args.v_hidden // 64, image_size=224, patch_size=14, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, projection_dim=args.v_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.t_hidden, intermediate_size=args.t_inter, num_hidden_layers=args.t_layers,
        num_attention_heads=args.t_hidden // 64, num_key_value_heads=args.t_hidden // 64, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=256, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(args.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        do_sample=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        max_new_tokens=8,
    )
    return model


# ----------------------------------------------------------------------------------------------
# data


class Packer:
    """Token ids of the prompt pieces, taken from the real processor so training sees exactly the
    ids that inference will: prefix = [<s>, user, :, <image> x 256], segment = question tokens +
    [assistant, :] + answer + [</s>]."""

    def __init__(self, processor):
        tok = processor.tokenizer
        self.tok = tok
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id
        self.image_id = tok.convert_tokens_to_ids("<image>")
        probe = self._prompt_ids(processor, "What color is the circle?")
        i = probe.index(self.image_id)
        j = len(probe) - 1 - probe[::-1].index(self.image_id)
        self.prefix = probe[: j + 1]
        assert j - i + 1 == 256, (i, j)
        self.processor = processor
        self.cache = {}

    @staticmethod
    def _prompt_ids(processor, question):
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
        img = Image.new("RGB", (224, 224), (200, 200, 200))
        return processor(images=img, text=prompt, return_tensors="pt")["input_ids"][0].tolist()

    def segment(self, question):
        """Prompt ids after the prefix (question ... assistant :)."""
        if question not in self.cache:
            ids = self._prompt_ids(self.processor, question)
            assert ids[: len(self.prefix)] == self.prefix
            self.cache[question] = ids[len(self.prefix):]
        return self.cache[question]

    def answer_id(self, answer):
        ids = self.tok(answer, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != self.tok.unk_token_id, (answer, ids)
        return ids[0]


def train_questions(scene, rng, extra_count=2, extra_exists=1, side_by_color=False):
    """All admissible question types once, plus extra count / exists questions (deduplicated).
    side_by_color adds a training-only variant, "Which side is the {color} object on?" (for each
    colour held by one off-centre object): more signal for reading positions, keyed by colour."""
    qas = scenes.all_questions(scene, rng)
    if side_by_color:
        for c in scenes.COLORS:
            objs = scene.with_color(c)
            if len(objs) == 1 and scenes.side_of(objs[0], scene.size):
                qas.append(("side", f"Which side is the {c} object on?", scenes.side_of(objs[0], scene.size)))
    for _ in range(extra_count):
        qas.append(("count",) + scenes.ask(scene, "count", rng))
    for _ in range(extra_exists):
        qas.append(("exists",) + scenes.ask(scene, "exists", rng))
    seen, out = set(), []
    for t, q, a in qas:
        if q not in seen:
            seen.add(q)
            out.append((t, q, a))
    return out


MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def pixels(img: Image.Image) -> torch.Tensor:
    """CLIPImageProcessor on a 224x224 image (resize and crop are no-ops): rescale + normalize."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0
    return (x - MEAN) / STD


def pack(packer: Packer, items, with_answers=True, guide=None):
    """items: [(pixel tensor, [(type, question, answer), ...]), ...] -> batch dict.

    Returns input_ids [B, T], position_ids [B, T], attn [B, 1, T, T] (bool, True = may attend),
    targets [(b, pos, target_id, kind)] where kind is 'answer' (predicted at the last prompt token)
    or 'eos' (predicted at the answer token). guide: optional per-item bool [256] of image tokens the
    question segments may see (the attention curriculum), or per item a list with one such mask (or
    None) per question; None = all of them (as at inference)."""
    P = len(packer.prefix)
    rows, poss, segs_all = [], [], []
    for _, qas in items:
        ids, pos, segs = list(packer.prefix), list(range(P)), []
        for t, q, a in qas:
            s = packer.segment(q)
            start = len(ids)
            seg = s + ([packer.answer_id(a), packer.eos] if with_answers else [])
            ids += seg
            pos += list(range(P, P + len(seg)))
            segs.append((start, len(seg), len(s), t, a))
        rows.append(ids)
        poss.append(pos)
        segs_all.append(segs)
    T = max(len(r) for r in rows)
    T = -(-T // 16) * 16  # a few distinct lengths only (torch.compile specialises on shapes)
    B = len(rows)
    input_ids = torch.full((B, T), packer.pad, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    attn = torch.zeros((B, 1, T, T), dtype=torch.bool)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    targets = []
    for b, (ids, pos, segs) in enumerate(zip(rows, poss, segs_all)):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids)
        position_ids[b, :n] = torch.tensor(pos)
        attn[b, 0, :P, :P] = causal[:P, :P]
        for si, (start, length, qlen, t, a) in enumerate(segs):
            attn[b, 0, start:start + length, :P] = True
            g = None if guide is None else guide[b][si] if isinstance(guide[b], list) else guide[b]
            if g is not None:
                i0 = packer.prefix.index(packer.image_id)
                attn[b, 0, start:start + length, i0:i0 + 256] = g
            attn[b, 0, start:start + length, start:start + length] = causal[:length, :length]
            last = start + qlen - 1  # the ':' after 'assistant'
            targets.append((b, last, packer.answer_id(a), "answer", t))
            if with_answers:
                targets.append((b, last + 1, packer.eos, "eos", t))
        for p in range(n, T):  # padding rows attend to themselves only
            attn[b, 0, p, p] = True
    return dict(input_ids=input_ids, position_ids=position_ids, attn=attn, targets=targets,
                pixel_values=torch.stack([px for px, _ in items]))


def image_features(model, pixel_values, with_vision=False):
    """What LlavaModel.get_image_features computes for vision_feature_layer -2 / "default": the
    hidden state after all but the last CLIP layer (no post-layernorm), CLS dropped, projected.
    Done by hand so that training skips the last CLIP layer, whose output LLaVA-1.5 never reads
    (its weights stay at their initialisation, decayed)."""
    vt = model.model.vision_tower
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    h = vt.pre_layrnorm(vt.embeddings(pixel_values))
    for layer in vt.encoder.layers[:-1]:
        h = layer(h, None)
    feats = model.model.multi_modal_projector(h[:, 1:])
    return (feats, h[:, 1:]) if with_vision else feats


def forward_logits(model, batch, positions, with_vision=False):
    """Logits at the given (b, pos) positions; the LLaVA forward done by hand so a custom 4D mask
    and per-segment position ids reach the decoder."""
    cfg = model.config
    feats, vis = image_features(model, batch["pixel_values"], with_vision=True)
    ids = batch["input_ids"]
    emb = model.model.language_model.embed_tokens(ids)
    mask = ids == cfg.image_token_id
    emb = emb.masked_scatter(mask.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]).to(emb.dtype))
    out = model.model.language_model(inputs_embeds=emb, attention_mask=batch["attn"],
                                     position_ids=batch["position_ids"], use_cache=False)
    h = out.last_hidden_state
    bi = torch.tensor([b for b, _ in positions])
    pi = torch.tensor([p for _, p in positions])
    logits = model.lm_head(h[bi, pi])
    return (logits, vis) if with_vision else logits


GRID, PATCH = 16, 14


def object_masks(scene):
    """Per object, the patches whose centre lies inside it: [bool [GRID, GRID], ...]."""
    c = (np.arange(GRID) + 0.5) * PATCH
    px, py = np.meshgrid(c, c)  # [row = y, col = x]
    masks = []
    for o in scene.objects:
        if o.shape == "circle":
            inside = (px - o.cx) ** 2 + (py - o.cy) ** 2 < o.size ** 2
        else:
            inside = np.ones_like(px, dtype=bool)
            pts = scenes._polygon(o, 1.0)
            for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):  # clockwise in image coordinates
                inside &= (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0) >= 0
        masks.append(inside)
    return masks


def dilate(mask: np.ndarray) -> torch.Tensor:
    """A [GRID, GRID] mask grown by one patch in every direction, flattened to bool [GRID * GRID]."""
    m = torch.from_numpy(mask).float()[None, None]
    return F.max_pool2d(m, 3, stride=1, padding=1).reshape(-1) > 0


def focus_mask(scene, masks, question):
    """The image tokens on (or next to) the objects a question is about: those of its shape, of its
    colour, or of either when it names both (exists). None when no object matches (e.g. a count of 0)."""
    words = set(question.lower().rstrip("?").split())
    shape = next((x for x in scenes.SHAPES if x in words or x + "s" in words), None)
    color = next((x for x in scenes.COLORS if x in words), None)
    picked = [m for o, m in zip(scene.objects, masks) if (o.shape == shape) or (o.color == color)]
    return dilate(np.any(picked, axis=0)) if picked else None


def patch_labels(scene):
    """Auxiliary per-patch targets (training only): the shape (0 = background) and colour of the
    object under each patch centre, and whether the patch holds an object's centre."""
    shape = np.zeros((GRID, GRID), np.int64)
    color = np.zeros((GRID, GRID), np.int64)
    centre = np.zeros((GRID, GRID), np.float32)
    for o, inside in zip(scene.objects, object_masks(scene)):
        shape[inside] = scenes.SHAPES.index(o.shape) + 1
        color[inside] = scenes.COLORS.index(o.color) + 1
        centre[min(GRID - 1, int(o.cy // PATCH)), min(GRID - 1, int(o.cx // PATCH))] = 1.0
    return shape.reshape(-1), color.reshape(-1), centre.reshape(-1)


def make_train_batch(packer, args, step, batch_size):
    items, labels, focus = [], [], []
    for k in range(batch_size):
        rng = scenes.image_rng("train", args.seed, step * 10_000 + k)
        scene, img = scenes.make_scene(rng)
        qas = train_questions(scene, rng, args.extra_count, args.extra_exists, args.side_by_color)
        items.append((pixels(img), qas))
        labels.append(patch_labels(scene))
        if step < args.focus_steps:
            masks = object_masks(scene)
            frng = np.random.default_rng([args.seed, step, k])
            pick = frng.random(len(qas)) < args.focus_fraction
            seg = [focus_mask(scene, masks, q) if p else None for (_, q, _), p in zip(qas, pick)]
            if args.focus_anneal:
                # also show a growing random share of the other image tokens (all of them at the end), so
                # the model must learn to find the named object rather than average what it can see
                share = step / args.focus_steps
                seg = [m if m is None else m | torch.from_numpy(frng.random(GRID * GRID) < share) for m in seg]
            focus.append(seg)
    guide = None
    if step < args.guide_steps:
        # attention curriculum: question tokens see only the image tokens on or next to an object
        guide = [dilate(shape.reshape(GRID, GRID) > 0) for shape, _, _ in labels]
    elif step < args.focus_steps:
        # sharper curriculum: each question sees only the image tokens of the objects it is about
        guide = focus
    batch = pack(packer, items, guide=guide)
    batch["aux"] = [torch.from_numpy(np.stack(x)) for x in zip(*labels)]  # shape, colour [B,256] long; centre float
    return batch


class AuxHeads(torch.nn.Module):
    """Linear probes on the image features (the vision tower output the projector reads): per-patch
    shape / colour / object-centre. Training-only scaffolding that speeds up learning the vision
    tower from scratch; not part of the saved model."""

    def __init__(self, dim, column_weight=0.0, half_weight=0.0):
        super().__init__()
        self.column_weight = column_weight  # > 0: also regress each patch's column (x position) in [-1, 1]
        self.half_weight = half_weight  # > 0: also classify each patch as left / right half of the image
        self.head = torch.nn.Linear(dim, 4 + 5 + 1 + (1 if column_weight else 0) + (2 if half_weight else 0))
        column = torch.arange(GRID * GRID) % GRID
        self.register_buffer("column", column.float() / (GRID - 1) * 2 - 1, persistent=False)
        self.register_buffer("half_label", (column >= GRID // 2).long(), persistent=False)

    def loss(self, vis, aux, metrics=False):
        out = self.head(vis)
        shape, color, centre = aux
        loss = (F.cross_entropy(out[..., :4].reshape(-1, 4), shape.reshape(-1))
                + F.cross_entropy(out[..., 4:9].reshape(-1, 5), color.reshape(-1))
                + F.binary_cross_entropy_with_logits(out[..., 9], centre, pos_weight=torch.tensor(8.0)))
        if self.column_weight:
            loss = loss + self.column_weight * F.mse_loss(out[..., 10], self.column.expand_as(out[..., 10]))
        if self.half_weight:
            half_logits = out[..., -2:].reshape(-1, 2)
            loss = loss + self.half_weight * F.cross_entropy(half_logits, self.half_label.repeat(out.shape[0]))
        if not metrics:
            return loss
        with torch.no_grad():
            obj = shape > 0
            m = {"shape_acc": (out[..., :4].argmax(-1) == shape)[obj].float().mean().item(),
                 "color_acc": (out[..., 4:9].argmax(-1) == color)[obj].float().mean().item(),
                 "centre_hit": (out[..., 9] > 0)[centre > 0].float().mean().item(),
                 "centre_fp": (out[..., 9] > 0)[centre == 0].float().mean().item()}
            if self.half_weight:
                m["half_acc"] = (out[..., -2:].argmax(-1) == self.half_label).float().mean().item()
            if self.column_weight:
                m["column_mse"] = F.mse_loss(out[..., 10], self.column.expand_as(out[..., 10])).item()
        return loss, m


def vision_pretrain(model, aux_heads, args, steps):
    """Phase 1 (optional): the vision tower alone, trained on the per-patch auxiliary targets of
    fresh train scenes (about a quarter of the cost of a full step per image)."""
    params = list(model.model.vision_tower.parameters()) + list(aux_heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.vision_pre_lr, betas=(0.9, 0.98), weight_decay=args.wd)
    t0 = time.time()
    for step in range(steps):
        lr = args.vision_pre_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        pv, labels = [], []
        for k in range(args.vision_batch):
            rng = scenes.image_rng("train", args.seed, 1_000_000_000 + step * 10_000 + k)
            scene, img = scenes.make_scene(rng)
            pv.append(pixels(img))
            labels.append(patch_labels(scene))
        aux = [torch.from_numpy(np.stack(x)) for x in zip(*labels)]
        _, vis = image_features(model, torch.stack(pv), with_vision=True)
        loss, m = aux_heads.loss(vis, aux, metrics=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            el = time.time() - t0
            print(f"vision step {step:5d} aux {loss.item():.4f} " + " ".join(f"{k} {v:.3f}" for k, v in m.items())
                  + f" lr {lr:.2e} {el / 60:.1f} min ({el / (step + 1):.2f} s/step) cpu {time.process_time() / 60:.1f} min", flush=True)


def load_split(data_dir: Path, split: str, count: int, seed: int, per_image: int):
    """The split's questions.jsonl (generated with scenes.write_split if missing or of another size)."""
    d = data_dir / split
    meta = d / "meta.json"
    want = {"count": count, "seed": seed, "per_image": per_image, "size": 224}
    if not (meta.exists() and json.loads(meta.read_text()) == want):
        if d.exists():
            shutil.rmtree(d)
        scenes.write_split(data_dir, split, count, seed, per_image, 224)
        meta.write_text(json.dumps(want))
    rows = [json.loads(l) for l in (d / "questions.jsonl").read_text().splitlines()]
    by_image = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append((r["type"], r["question"], r["answer"]))
    return d, by_image


@torch.no_grad()
def evaluate_packed(model, packer, split_dir, by_image, batch_size=32):
    """Greedy exact match, computed in one pass: the answer is right iff the argmax at the last
    prompt token is the answer and the argmax after it (teacher-forced, so equal to greedy when the
    first token is right) is EOS. Returns {type: [correct, total]}."""
    model.eval()
    res = {}
    names = sorted(by_image)
    for i in range(0, len(names), batch_size):
        items = [(pixels(Image.open(split_dir / n).convert("RGB")), by_image[n]) for n in names[i:i + batch_size]]
        batch = pack(packer, items)
        tg = batch["targets"]
        logits = forward_logits(model, batch, [(b, p) for b, p, _, _, _ in tg])
        pred = logits.argmax(-1).tolist()
        for k in range(0, len(tg), 2):
            ok = pred[k] == tg[k][2] and pred[k + 1] == tg[k + 1][2]
            r = res.setdefault(tg[k][4], [0, 0])
            r[0] += int(ok)
            r[1] += 1
    model.train()
    return res


def fmt(res):
    tot = [sum(v[0] for v in res.values()), sum(v[1] for v in res.values())]
    parts = [f"{t} {res[t][0] / res[t][1]:.3f}" for t in scenes.TYPES if t in res]
    return f"all {tot[0] / tot[1]:.4f} ({tot[0]}/{tot[1]}) | " + " ".join(parts), tot[0] / tot[1]


def save_checkpoint(model, processor, out: Path, dtype):
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sd_model = LlavaForConditionalGeneration(model.config)
    sd_model.load_state_dict(model.state_dict())
    sd_model.generation_config = model.generation_config
    sd_model.to(dtype).save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tj = tmp / "tokenizer.json"
    tj.write_text(json.dumps(json.loads(tj.read_text()), ensure_ascii=False, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


# ----------------------------------------------------------------------------------------------
# final evaluation through transformers' own path (processor + generate), on the PNG files


@torch.no_grad()
def evaluate_generate(model_dir: Path, split_dir: Path, limit=None, show=0):
    processor = AutoProcessor.from_pretrained(model_dir, backend="pil")
    ipn = type(processor.image_processor).__name__
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [json.loads(l) for l in (split_dir / "questions.jsonl").read_text().splitlines()][:limit]
    res, wrong, conf = {}, [], {}
    t0 = time.time()
    for k, r in enumerate(rows):
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}]
        prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
        inputs = processor(images=Image.open(split_dir / r["image"]), text=prompt, return_tensors="pt")
        out = model.generate(**inputs, do_sample=False, max_new_tokens=4)
        text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        ok = text == r["answer"]
        x = res.setdefault(r["type"], [0, 0])
        x[0] += int(ok)
        x[1] += 1
        if not ok:
            wrong.append({**r, "got": text})
            key = f"{r['type']}: {r['answer']} -> {text}"
            conf[key] = conf.get(key, 0) + 1
        if k < show:
            print(f"  {r['image']} {r['question']!r} -> {text!r} (expected {r['answer']!r})")
    return res, wrong, conf, ipn, time.time() - t0


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "models" / "default"))
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "small-vlm-scenes"),
                    help="where the val/test splits are generated (default: $TMPDIR/small-vlm-scenes)")
    ap.add_argument("--seed", type=int, default=0, help="model init and the train stream")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the val/test splits")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32, help="images per step (each carries ~7 questions)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vision-lr-mult", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the per-patch auxiliary loss (0 = off)")
    ap.add_argument("--aux-until", type=float, default=1.0, help="fraction of the steps that use the auxiliary loss")
    ap.add_argument("--vision-steps", type=int, default=0, help="phase 1: vision-tower-only steps on the auxiliary targets")
    ap.add_argument("--vision-batch", type=int, default=32)
    ap.add_argument("--vision-pre-lr", type=float, default=1e-3)
    ap.add_argument("--aux-column", type=float, default=0.0,
                    help="weight of an extra auxiliary target: each patch's column (x position), regressed")
    ap.add_argument("--aux-half", type=float, default=0.0,
                    help="weight of an extra auxiliary target: each patch's half of the image (left/right), classified")
    ap.add_argument("--side-by-color", action="store_true", help='also train on "Which side is the {color} object on?"')
    ap.add_argument("--side-loss-weight", type=float, default=1.0, help="weight of the answer loss of side questions")
    ap.add_argument("--focus-steps", type=int, default=0,
                    help="attention curriculum (after --guide-steps): until step N each question sees only the image tokens of the objects it names")
    ap.add_argument("--focus-fraction", type=float, default=1.0, help="share of the questions that --focus-steps restricts")
    ap.add_argument("--focus-anneal", action="store_true",
                    help="with --focus-steps: also show each restricted question a share of the other image tokens growing from 0 to all")
    ap.add_argument("--guide-steps", type=int, default=0,
                    help="attention curriculum: for the first N steps the question tokens see only image tokens on/near objects")
    ap.add_argument("--extra-count", type=int, default=2)
    ap.add_argument("--extra-exists", type=int, default=1)
    ap.add_argument("--v-hidden", type=int, default=192)
    ap.add_argument("--v-layers", type=int, default=6)
    ap.add_argument("--t-hidden", type=int, default=256)
    ap.add_argument("--t-inter", type=int, default=768)
    ap.add_argument("--t-layers", type=int, default=4)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for forward/backward")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init-from", default=None, help="start from the weights of a saved checkpoint (second stage)")
    ap.add_argument("--zero-init-probes", action="store_true",
                    help="start the shape/colour/centre probes at zero (warm starts: no jolt to a trained tower)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the CLIP layers and the decoder")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--val-count", type=int, default=500)
    ap.add_argument("--test-count", type=int, default=1000)
    ap.add_argument("--save-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--time-limit", type=float, default=0, help="minutes; stop (cosine cut short) after this")
    ap.add_argument("--stop-at", type=int, default=0, help="stop after this many steps of the --steps schedule (cosine cut short)")
    ap.add_argument("--no-test", action="store_true", help="skip the final test-split evaluation (intermediate stages)")
    ap.add_argument("--eval-only", default=None, help="evaluate a saved checkpoint on the test split and exit")
    ap.add_argument("--report", default=None, help="write the final test results (JSON) here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    data = Path(args.data)

    if args.eval_only:
        test_dir, _ = load_split(data, "test", args.test_count, args.data_seed, 1)
        final_eval(Path(args.eval_only), test_dir, args)
        return

    tok = build_tokenizer()
    processor = build_processor(tok)
    packer = Packer(processor)
    model = build_model(args, tok)
    if args.init_from:
        # warm start (a second stage): weights of an earlier run's saved checkpoint, upcast to float32
        init = LlavaForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32)
        model.load_state_dict(init.state_dict())  # strict: the sizes must match
        del init
        print(f"initialised from {args.init_from}")
    model.train()
    if args.compile:
        for layer in model.model.vision_tower.encoder.layers:
            layer.compile()
        model.model.language_model.compile()
    n_vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    n_proj = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    n_text = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    print(f"params: vision {n_vision / 1e6:.2f}M projector {n_proj / 1e6:.2f}M decoder {n_text / 1e6:.2f}M; vocab {len(tok)}")
    print("args:", json.dumps(vars(args)))

    val_dir, val_items = load_split(data, "val", args.val_count, args.data_seed, 1)

    aux_heads = AuxHeads(args.v_hidden, args.aux_column, args.aux_half)
    if args.zero_init_probes:
        # warm start: the shape/colour/centre probes start at zero so their first, random gradients do
        # not jolt the trained tower; the position probes keep their random start, which is what pulls
        # position information (otherwise decayed away) back into the image features
        with torch.no_grad():
            aux_heads.head.weight[:10].zero_()
    vis = [p for n, p in model.named_parameters() if "vision_tower" in n]
    rest = [p for n, p in model.named_parameters() if "vision_tower" not in n] + list(aux_heads.parameters())
    decay = lambda ps: [p for p in ps if p.ndim >= 2]
    nodecay = lambda ps: [p for p in ps if p.ndim < 2]
    groups = [
        {"params": decay(vis), "lr_mult": args.vision_lr_mult, "weight_decay": args.wd},
        {"params": nodecay(vis), "lr_mult": args.vision_lr_mult, "weight_decay": 0.0},
        {"params": decay(rest), "lr_mult": 1.0, "weight_decay": args.wd},
        {"params": nodecay(rest), "lr_mult": 1.0, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    t_start = time.time()
    if args.vision_steps:
        vision_pretrain(model, aux_heads, args, args.vision_steps)
    out = Path(args.out)
    best = -1.0
    t0 = time.time()
    seen_imgs = seen_q = 0
    ema = None
    history = []
    for step in range(args.steps):
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        batch = make_train_batch(packer, args, step, args.batch)
        tg = batch["targets"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits, vis_h = forward_logits(model, batch, [(b, p) for b, p, _, _, _ in tg], with_vision=True)
        target = torch.tensor([t for _, _, t, _, _ in tg])
        weight = torch.tensor([args.side_loss_weight if typ == "side" else 1.0 for _, _, _, _, typ in tg])
        loss = (F.cross_entropy(logits.float(), target, reduction="none") * weight).sum() / weight.sum()
        aux_w = args.aux_weight * (1.0 if step < args.aux_until * args.steps else 0.0)
        aux_loss = aux_heads.loss(vis_h.float(), batch["aux"]) if aux_w > 0 else torch.zeros(())
        if step % 10 == 0 and aux_w > 0:
            with torch.no_grad():
                _, aux_m = aux_heads.loss(vis_h.float(), batch["aux"], metrics=True)
        opt.zero_grad(set_to_none=True)
        (loss + aux_w * aux_loss).backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen_imgs += args.batch
        seen_q += len(tg) // 2
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        el = time.time() - t0
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f} ema {ema:.4f} aux {aux_loss.item():.3f} gn {gn:.2f} lr {lr:.2e} "
                  f"imgs {seen_imgs} qs {seen_q} {el / 60:.1f} min ({el / (step + 1):.2f} s/step) cpu {time.process_time() / 60:.1f} min"
                  + ("" if aux_w == 0 else " | " + " ".join(f"{k} {v:.2f}" for k, v in aux_m.items())), flush=True)
        last = (step == args.steps - 1 or (args.stop_at and step + 1 >= args.stop_at)
                or (args.time_limit and el > args.time_limit * 60))
        if (step + 1) % args.eval_every == 0 or last:
            res = evaluate_packed(model, packer, val_dir, val_items)
            line, acc = fmt(res)
            history.append({"step": step + 1, "minutes": round(el / 60, 2), "val": acc, "per_type": res})
            tag = ""
            if acc > best:
                best = acc
                save_checkpoint(model, processor, out, getattr(torch, args.save_dtype))
                tag = " -> saved"
            print(f"VAL step {step + 1}: {line}{tag}", flush=True)
        if last:
            break
    print(f"training done: {args.vision_steps} vision steps + {step + 1} steps, {seen_imgs} images in phase 2, {seen_q} questions, "
          f"wall {(time.time() - t_start) / 60:.1f} min (phase 2 {(time.time() - t0) / 60:.1f}), process cpu {time.process_time() / 60:.1f} min, best val {best:.4f}")
    if args.no_test:
        return
    test_dir, _ = load_split(data, "test", args.test_count, args.data_seed, 1)
    final_eval(out, test_dir, args, train_minutes=(time.time() - t_start) / 60, history=history)


def final_eval(model_dir: Path, test_dir: Path, args, train_minutes=None, history=None):
    res, wrong, conf, ipn, secs = evaluate_generate(model_dir, test_dir, show=5)
    line, acc = fmt(res)
    print(f"TEST ({ipn}, transformers generate, greedy, {secs:.0f}s): {line}")
    for k, v in sorted(conf.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  confusion {k}: {v}")
    if args.report:
        Path(args.report).write_text(json.dumps({
            "test": {"accuracy": acc, "per_type": res, "confusions": conf, "wrong": wrong[:50]},
            "train_minutes": train_minutes, "history": history, "args": vars(args),
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
