#!/usr/bin/env python3
"""Dev-time: a bench checkpoint's decoder as GGUF files for llama.cpp (not committed).

llama.cpp's convert_hf_to_gguf.py turns the LLaVA folder into a `llama` GGUF, so the decoder is
first rewritten as a plain *ForCausalLM folder of its own architecture (Qwen2, LLaMA, Mistral;
weights unchanged, in the checkpoint's dtype, shard by shard so a 7B model is never held whole),
then converted to a GGUF (f32 when f32 is asked for, else bf16) and quantized to the other kinds
(Q4_K_M mostly falls back to q5_0 on 896-wide tensors, so q4_0 is the 4-bit row). The vision tower
and projector become mmproj-f16.gguf for llama-mtmd-cli (see `mmproj`). Needs bench/build_llama_cpp.sh first, and scripts/requirements.txt (its sentencepiece: the
converter imports it before falling back to the GPT-2-style tokenizer.json). Resumable:
files that exist are kept.

    python bench/make_llama_cpp_models.py [--model bench/models/llava-qwen-0.5b-shape] [--kinds f32,q8_0,q4_0]
    python bench/make_llama_cpp_models.py --model bench/models/llava-1.5-7b-shape --kinds q8_0,q4_0
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP = ROOT / "bench/vendor/llama.cpp"
PREFIXES = ("language_model.model.", "model.language_model.")


ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}


def pad_tokenizer(out: Path, vocab_size: int) -> None:
    """llama.cpp wants one token per embedding row, and llava-1.5 pads its embedding (32064 rows)
    past its tokenizer (32002 tokens; llama-bench: "token_embd.weight has wrong shape"): add unused
    special tokens up to the embedding's size."""
    file = out / "tokenizer.json"
    tok = json.loads(file.read_text())
    size = 1 + max([t["id"] for t in tok.get("added_tokens", [])] + list(tok["model"]["vocab"].values()))
    for i in range(size, vocab_size):
        tok["added_tokens"].append({"id": i, "content": f"<pad_{i}>", "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": True})
    file.write_text(json.dumps(tok, ensure_ascii=False))


def text_folder(llava: Path, out: Path) -> None:
    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((llava / "config.json").read_text())
    text = dict(config["text_config"])
    text.update(architectures=[ARCHITECTURES[text["model_type"]]])
    # The converter reads rope_theta at the top level, not transformers 5's rope_parameters.
    text.setdefault("rope_theta", text.get("rope_parameters", {}).get("rope_theta", 10000.0))
    (out / "config.json").write_text(json.dumps(text, indent=2))
    weight_map = {}
    for i, shard in enumerate(sorted(llava.glob("*.safetensors"))):
        tensors = {}
        for name, t in load_file(shard).items():
            for p in PREFIXES:
                if name.startswith(p):
                    tensors["model." + name[len(p):]] = t.contiguous()
            if name in ("language_model.lm_head.weight", "lm_head.weight"):
                tensors["lm_head.weight"] = t.contiguous()
        if tensors:
            file = f"model-{i:05d}.safetensors"
            save_file(tensors, out / file, metadata={"format": "pt"})
            weight_map.update({n: file for n in tensors})
        del tensors
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (llava / f).exists():
            shutil.copy(llava / f, out / f)
    pad_tokenizer(out, text["vocab_size"])


# transformers 5 flattened CLIPVisionModel and SiglipVisionModel (no `.vision_model` level); the
# legacy converter walks `model.vision_model.encoder.layers` and names tensors `vision_model.*`.
# Run it with the loaded model wrapped back in that level.
LEGACY_SHIM = """
import runpy, sys, torch, transformers
def wrap(cls):
    load = cls.from_pretrained
    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.vision_model = inner
    cls.from_pretrained = staticmethod(lambda *a, **k: Wrapped(load(*a, **k)))
wrap(transformers.CLIPVisionModel)
wrap(transformers.SiglipVisionModel)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def mmproj(llava: Path, out: Path) -> None:
    """The vision tower and projector as llama.cpp's LLaVA image encoder (mmproj-f16.gguf), through
    its legacy converter: the new one converts only Pixtral's LLaVA. The converter wants the tower
    as a CLIP/SigLIP folder of its own and the projector as a torch file; it takes GELU only when
    hidden_act is "gelu" (else GELU-quick), so SigLIP's tanh GELU is written as "gelu" (ggml's GELU
    is the tanh form). It keeps the tower up to the deepest vision_feature_layer."""
    target = out / "mmproj-f16.gguf"
    if target.exists():
        return
    config = json.loads((llava / "config.json").read_text())
    vision = dict(config["vision_config"], vision_feature_layer=config.get("vision_feature_layer", -2))
    siglip = vision["model_type"].startswith("siglip")
    if vision.get("hidden_act") == "gelu_pytorch_tanh":
        vision["hidden_act"] = "gelu"
    work = out / "vision-hf"
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(vision, indent=2))
    tower, projector = {}, {}
    for shard in sorted(llava.glob("*.safetensors")):
        for name, t in load_file(shard).items():
            for p in ("model.vision_tower.", "vision_tower."):
                if name.startswith(p):
                    rest = name[len(p):]
                    tower[rest if rest.startswith("vision_model.") else "vision_model." + rest] = t.to(torch.float32).contiguous()
            for p in ("model.multi_modal_projector.", "multi_modal_projector."):
                if name.startswith(p):
                    projector["multi_modal_projector." + name[len(p):]] = t.to(torch.float32).contiguous()
    save_file(tower, work / "model.safetensors", metadata={"format": "pt"})
    torch.save(projector, work / "llava.projector")
    del tower, projector
    processor = json.loads((llava / "processor_config.json").read_text()).get("image_processor", {}) if (llava / "processor_config.json").exists() else {}
    if (llava / "preprocessor_config.json").exists():
        processor = json.loads((llava / "preprocessor_config.json").read_text())
    args = [sys.executable, "-c", LEGACY_SHIM, str(LLAMA_CPP / "tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py"), "-m", str(work),
            "--llava-projector", str(work / "llava.projector"), "--output-dir", str(work),
            "--clip-model-is-vision", *(["--clip-model-is-siglip"] if siglip else [])]
    if "image_mean" in processor:
        args += ["--image-mean", *map(str, processor["image_mean"]), "--image-std", *map(str, processor["image_std"])]
    subprocess.run(args, check=True)
    (work / "mmproj-model-f16.gguf").rename(target)
    shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "bench/models/llava-qwen-0.5b-shape"))
    ap.add_argument("--kinds", default="f32,q8_0,q4_0", help="GGUF kinds to write, comma-separated")
    args = ap.parse_args()
    llava = Path(args.model)
    kinds = args.kinds.split(",")
    out = ROOT / "bench/models" / f"{llava.name}-gguf"
    text = out / "text-hf"
    text_folder(llava, text)
    base_kind = "f32" if "f32" in kinds else "bf16"
    base = out / f"text-{base_kind}.gguf"
    if not base.exists():
        subprocess.run([sys.executable, str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(text), "--outtype", base_kind, "--outfile", str(base)], check=True)
    for kind in kinds:
        target = out / f"text-{kind}.gguf"
        if not target.exists():
            subprocess.run([str(LLAMA_CPP / "build/bin/llama-quantize"), str(base), str(target), kind.upper()], check=True)
    mmproj(llava, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
