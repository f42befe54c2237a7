#!/usr/bin/env python3
"""Records reference outputs of Pillow and transformers for the TypeScript tests.

Run from anywhere with the default python3 (Pillow 13, numpy, transformers 5.23):

    python3 scripts/pil_cases.py

It writes test/fixtures/pil/:
  resize.json + resize.bin        input images and PIL Image.resize outputs (uint8 RGB)
  processors.json + processors.bin  CLIPImageProcessorPil / SiglipImageProcessorPil pixel_values
                                  (float32 little-endian, [3, H, W]) for the configs in <case>/
  exif6.jpg, exif6.rgb             a JPEG whose EXIF orientation rotates it, and load_image's pixels

transformers 5 names its PIL-backed (slow) processors *Pil; the unsuffixed classes are now the
torchvision backend, which does not resize like PIL, so the Pil classes are the reference.
"""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil
from transformers.image_utils import load_image

OUT = Path(__file__).resolve().parent.parent / "test" / "fixtures" / "pil"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def skimage_photo(name: str) -> np.ndarray:
    # Debian's python3-skimage lives with the system python, not necessarily the default one.
    data_dir = subprocess.check_output(
        ["/usr/bin/python3", "-c", "import skimage.data,os;print(os.path.dirname(skimage.data.__file__))"],
        text=True,
    ).strip()
    return np.asarray(Image.open(Path(data_dir) / name).convert("RGB"))


def make_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    h, w = 37, 53
    y, x = np.mgrid[0:h, 0:w]
    # Smooth ramps, per-pixel noise and a hard-edged block: overshoot and clipping get exercised.
    synth = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), rng.integers(0, 256, (h, w))], -1)
    synth[10:20, 30:40] = [255, 0, 255]
    return {
        "synth": synth.astype(np.uint8),
        "cat": np.ascontiguousarray(skimage_photo("chelsea.png")[60:108, 150:214]),  # 64x48 landscape
        "astronaut": np.ascontiguousarray(skimage_photo("astronaut.png")[30:95, 190:231]),  # 41x65 portrait
    }


def resize_sizes(w: int, h: int) -> list[tuple[int, int]]:
    return [
        (w // 3, h // 3),  # plain downscale
        (w * 2 // 3 + 1, h * 3 // 5),  # non-integer ratios
        (13, 29),  # down in x, mixed in y
        (5, 3),
        (1, 1),
        (1, h),  # 1-pixel edges, other axis unchanged (single pass)
        (w, 1),
        (w // 2, h),
        (w + 1, h + 1),  # ratio just below 1
        (2 * w + 3, 2 * h - 1),  # odd upscale
        (3 * w, 4),  # up in x, down in y: Pillow 13 runs the vertical pass first
        (w - 4, h // 6),  # both down, height much more: vertical first as well
    ]


def record_resizes(images: dict[str, np.ndarray]) -> None:
    blob = bytearray()
    manifest: dict = {"images": [], "cases": []}
    for name, arr in images.items():
        manifest["images"].append({"name": name, "width": arr.shape[1], "height": arr.shape[0], "offset": len(blob)})
        blob += arr.tobytes()
    for name, arr in images.items():
        im = Image.fromarray(arr)
        for w, h in resize_sizes(im.width, im.height):
            for resample in (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.NEAREST):
                out = np.asarray(im.resize((w, h), resample))
                manifest["cases"].append(
                    {"image": name, "width": w, "height": h, "resample": int(resample), "offset": len(blob)}
                )
                blob += out.tobytes()
    (OUT / "resize.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (OUT / "resize.bin").write_bytes(bytes(blob))


def processor_cases() -> list[tuple[str, str, dict]]:
    """(case name, image name or fixture file, preprocessor_config.json contents)."""
    clip = {"image_processor_type": "CLIPImageProcessor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "rescale_factor": 1 / 255, "resample": 3}
    siglip = {"image_processor_type": "SiglipImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
              "rescale_factor": 1 / 255, "resample": 3}
    return [
        # LLaVA-1.5's config shape at a small size: shortest edge, then a square center crop.
        ("clip_cat", "cat", {**clip, "size": {"shortest_edge": 24}, "crop_size": {"height": 24, "width": 24}}),
        ("clip_portrait_odd", "astronaut", {**clip, "size": {"shortest_edge": 21}, "crop_size": {"height": 17, "width": 13}}),
        # Crop larger than the resized image: transformers pads with zeros.
        ("clip_pad", "synth", {**clip, "size": {"shortest_edge": 16}, "crop_size": {"height": 20, "width": 25}}),
        ("clip_hw_bilinear", "cat", {**clip, "size": {"height": 19, "width": 23}, "resample": 2, "do_center_crop": False}),
        ("clip_nearest_no_rescale", "synth", {**clip, "size": {"shortest_edge": 12}, "crop_size": {"height": 10, "width": 10},
                                             "resample": 0, "do_rescale": False,
                                             "image_mean": [120, 110.5, 100], "image_std": [60, 50, 70.25]}),
        ("clip_no_resize", "astronaut", {**clip, "do_resize": False, "crop_size": {"height": 30, "width": 50}}),
        # Old checkpoints: a feature_extractor_type and bare ints for size / crop_size.
        ("clip_legacy_ints", "cat", {**{k: v for k, v in clip.items() if k != "image_processor_type"},
                                     "feature_extractor_type": "CLIPFeatureExtractor", "size": 20, "crop_size": 18}),
        ("clip_exif_jpeg", "exif6.jpg", {**clip, "size": {"shortest_edge": 24}, "crop_size": {"height": 24, "width": 24}}),
        ("siglip_cat", "cat", {**siglip, "size": {"height": 28, "width": 28}}),
        ("siglip_fast_portrait", "astronaut", {**siglip, "image_processor_type": "SiglipImageProcessorFast",
                                               "size": {"height": 30, "width": 30}}),
    ]


def record_processors(images: dict[str, np.ndarray]) -> None:
    # A rotated photo: stored 64 wide x 48 high, displayed 48 x 64 after EXIF orientation 6.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(images["cat"]).save(OUT / "exif6.jpg", quality=92, exif=exif)
    (OUT / "exif6.rgb").write_bytes(np.asarray(load_image(str(OUT / "exif6.jpg"))).tobytes())

    blob = bytearray()
    cases = []
    for name, source, config in processor_cases():
        case_dir = OUT / name
        case_dir.mkdir()
        (case_dir / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")
        is_siglip = config.get("image_processor_type", "").startswith("Siglip")
        # from_pretrained reads the very file the TypeScript loader reads.
        processor = (SiglipImageProcessorPil if is_siglip else CLIPImageProcessorPil).from_pretrained(case_dir)
        image = load_image(str(OUT / source)) if source.endswith(".jpg") else Image.fromarray(images[source])
        pixels = processor(image, return_tensors="np")["pixel_values"][0].astype("<f4")
        cases.append({"name": name, "image": source, "shape": list(pixels.shape), "offset": len(blob)})
        blob += pixels.tobytes()
    (OUT / "processors.json").write_text(json.dumps(cases, indent=1) + "\n")
    (OUT / "processors.bin").write_bytes(bytes(blob))


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    images = make_images()
    record_resizes(images)
    record_processors(images)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
