#!/usr/bin/env python3
"""Dev-time: the bench checkpoint's decoder as GGUF files for llama.cpp (not committed).

llama.cpp's convert_hf_to_gguf.py turns the LLaVA folder into a `llama` GGUF, so the decoder is
first rewritten as a plain Qwen2ForCausalLM folder (its weights unchanged, in f32), then
converted to f32 GGUF and quantized to q8_0 and q4_0 (Q4_K_M mostly falls back to q5_0 on
896-wide tensors, so q4_0 is the 4-bit row). Needs bench/build_llama_cpp.sh first, and scripts/requirements.txt (its sentencepiece: the
converter imports it before falling back to the GPT-2-style tokenizer.json). Resumable:
files that exist are kept.

    python bench/make_llama_cpp_models.py [--model bench/models/llava-qwen-0.5b-shape]
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


def text_folder(llava: Path, out: Path) -> None:
    if (out / "model.safetensors").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((llava / "config.json").read_text())
    text = dict(config["text_config"], architectures=["Qwen2ForCausalLM"], torch_dtype="float32")
    # The converter reads rope_theta at the top level, not transformers 5's rope_parameters.
    text.setdefault("rope_theta", text.get("rope_parameters", {}).get("rope_theta", 10000.0))
    (out / "config.json").write_text(json.dumps(text, indent=2))
    tensors = {}
    for shard in sorted(llava.glob("*.safetensors")):
        for name, t in load_file(shard).items():
            for p in PREFIXES:
                if name.startswith(p):
                    tensors["model." + name[len(p):]] = t.to(torch.float32).contiguous()
            if name in ("language_model.lm_head.weight", "lm_head.weight"):
                tensors["lm_head.weight"] = t.to(torch.float32).contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (llava / f).exists():
            shutil.copy(llava / f, out / f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "bench/models/llava-qwen-0.5b-shape"))
    args = ap.parse_args()
    llava = Path(args.model)
    out = ROOT / "bench/models" / f"{llava.name}-gguf"
    text = out / "text-hf"
    text_folder(llava, text)
    f32 = out / "text-f32.gguf"
    if not f32.exists():
        subprocess.run([sys.executable, str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(text), "--outtype", "f32", "--outfile", str(f32)], check=True)
    for kind in ("q8_0", "q4_0"):
        target = out / f"text-{kind}.gguf"
        if not target.exists():
            subprocess.run([str(LLAMA_CPP / "build/bin/llama-quantize"), str(f32), str(target), kind.upper()], check=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
