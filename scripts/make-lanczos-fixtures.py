#!/usr/bin/python3
"""Writes tests/fixtures/lanczos/: small deterministic images and Pillow's LANCZOS resizes of them.

Dev-only (the product and its tests are TypeScript; tests read the committed files). Needs Pillow and numpy:
  apt-get install -y python3-pil python3-numpy && /usr/bin/python3 scripts/make-lanczos-fixtures.py

Every image is stored as raw interleaved uint8 (HWC, rows top to bottom): `<name>.rgb` (3 channels) or
`<name>.rgba` (4 channels). index.json lists them:
- `resize`: RGB sources resized with `Image.resize((w, h), Image.LANCZOS)` (up, down, one axis, both).
- `resize_rgba`: RGBA sources resized by Pillow (which premultiplies alpha: RGBA -> RGBa -> resize -> RGBA), and
  the result alpha-composited over white (`Image.alpha_composite(white, im).convert("RGB")`).
- `idefics3`: the Idefics3ImageProcessor slow path (transformers image_processing_idefics3.py, the PIL one) redone
  with Pillow: stage 1 `_resize_output_size_rescale_to_max_len` + `_resize_output_size_scale_below_upper_bound`
  (4096), stage 2 `resize_for_vision_encoder`, `split_image` (row-major crops, global image last), and for RGBA
  `convert_to_rgb` (composite over white) applied to each tile after resizing and splitting, as that file does.
"""

import json
import math
import os
import sys

import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "lanczos")


def lcg_bytes(n, seed):
    """Deterministic bytes (a 32-bit LCG, top byte), independent of numpy's RNG versions."""
    out = np.empty(n, dtype=np.uint8)
    s = seed & 0xFFFFFFFF
    for i in range(n):
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        out[i] = s >> 24
    return out


def make_rgb(w, h, seed):
    """Gradients + a hard-edged block pattern (exercises Lanczos overshoot and clipping) + some noise."""
    y, x = np.mgrid[0:h, 0:w]
    noise = lcg_bytes(w * h * 3, seed).reshape(h, w, 3).astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = ((x * 7 + y * 13) % 64) * 4
    block = (((x // 3) + (y // 2)) % 2) * 255
    img = np.stack([r, g, b], axis=-1)
    # Left third: blocks; middle: gradients with noise; right: raw noise.
    sel = np.stack([x < w // 3] * 3, axis=-1)
    img = np.where(sel, np.stack([block, 255 - block, block], axis=-1), img)
    mid = np.stack([(x >= w // 3) & (x < 2 * w // 3)] * 3, axis=-1)
    img = np.where(mid, np.clip(img + (noise % 32) - 16, 0, 255), img)
    right = np.stack([x >= 2 * w // 3] * 3, axis=-1)
    img = np.where(right, noise, img)
    return np.ascontiguousarray(img.astype(np.uint8))


def make_rgba(w, h, seed):
    rgb = make_rgb(w, h, seed)
    y, x = np.mgrid[0:h, 0:w]
    a = (x * 255) // max(w - 1, 1)
    a = np.where(y % 5 == 0, 0, a)  # fully transparent rows
    a = np.where(y % 7 == 3, 255, a)  # opaque rows
    a = np.where((x + y) % 11 == 0, (lcg_bytes(w * h, seed + 1).reshape(h, w)), a)
    return np.ascontiguousarray(np.concatenate([rgb, a[..., None].astype(np.uint8)], axis=-1))


files = {}


def save(name, arr):
    ext = "rgb" if arr.shape[2] == 3 else "rgba"
    fname = f"{name}.{ext}"
    with open(os.path.join(OUT, fname), "wb") as f:
        f.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
    files[fname] = True
    return {"file": fname, "width": int(arr.shape[1]), "height": int(arr.shape[0]), "channels": int(arr.shape[2])}


def composite_white(im):
    """transformers idefics3 convert_to_rgb: RGBA over an opaque white background, then RGB."""
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


# ---- idefics3 slow path (sizes exactly as image_processing_idefics3.py computes them)
MAX_IMAGE_SIZE = 4096


def rescale_to_max_len(height, width, max_len, min_len=1):
    aspect_ratio = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect_ratio)
        if height % 2 != 0:
            height += 1
    elif height > width:
        height = max_len
        width = int(height * aspect_ratio)
        if width % 2 != 0:
            width += 1
    return max(height, min_len), max(width, min_len)


def scale_below_upper_bound(height, width, max_len):
    aspect_ratio = width / height
    if width >= height and width > max_len:
        width = max_len
        height = int(width / aspect_ratio)
    elif height > width and height > max_len:
        height = max_len
        width = int(height * aspect_ratio)
    return max(height, 1), max(width, 1)


def vision_encoder_size(height, width, m):
    aspect_ratio = width / height
    if width >= height:
        width = math.ceil(width / m) * m
        height = int(width / aspect_ratio)
        height = math.ceil(height / m) * m
    elif height > width:
        height = math.ceil(height / m) * m
        width = int(height * aspect_ratio)
        width = math.ceil(width / m) * m
    return height, width


def idefics3(im, longest_edge, max_size, do_resize=True, do_image_splitting=True):
    L = Image.Resampling.LANCZOS
    if do_resize:
        h, w = rescale_to_max_len(im.height, im.width, longest_edge)
        h, w = scale_below_upper_bound(h, w, MAX_IMAGE_SIZE)
        im = im.resize((w, h), L)
    stage1 = im
    if do_image_splitting:
        h, w = vision_encoder_size(im.height, im.width, max_size)
        im = im.resize((w, h), L)
        stage2 = im
        arr = np.array(im)
        if im.height > max_size or im.width > max_size:
            rows, cols = math.ceil(im.height / max_size), math.ceil(im.width / max_size)
            tiles = [
                Image.fromarray(arr[r * max_size : (r + 1) * max_size, c * max_size : (c + 1) * max_size])
                for r in range(rows)
                for c in range(cols)
            ]
            tiles.append(im.resize((max_size, max_size), L))
        else:
            rows = cols = 0
            tiles = [im]
    else:
        im = im.resize((max_size, max_size), L)
        stage2 = im
        rows = cols = 0
        tiles = [im]
    tiles = [composite_white(t) if t.mode == "RGBA" else t for t in tiles]
    return stage1, stage2, rows, cols, tiles


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith((".rgb", ".rgba")) or f == "index.json":
            os.remove(os.path.join(OUT, f))
    index = {
        "pillow_version": PIL.__version__,
        "generator": "scripts/make-lanczos-fixtures.py",
        "resize": [],
        "resize_rgba": [],
        "idefics3": [],
    }

    # (w, h, seed, targets (w, h)): odd sizes, up and down, one axis only, mixed directions, extreme factors.
    cases = [
        (37, 23, 1, [(19, 11), (75, 47), (37, 9), (13, 23), (1, 1), (53, 7)]),
        (70, 45, 2, [(64, 42), (33, 61), (99, 47), (9, 45)]),
        (5, 61, 3, [(17, 29), (3, 121), (5, 13), (41, 3)]),
        (101, 7, 4, [(51, 3), (203, 15), (7, 101), (9, 5)]),
    ]
    for w, h, seed, targets in cases:
        arr = make_rgb(w, h, seed)
        src = save(f"src_{w}x{h}", arr)
        im = Image.fromarray(arr, "RGB")
        for tw, th in targets:
            out = np.array(im.resize((tw, th), Image.Resampling.LANCZOS))
            index["resize"].append({"src": src, "out": save(f"out_{w}x{h}_to_{tw}x{th}", out)})

    for w, h, seed, targets in [(37, 23, 5, [(19, 11), (75, 47), (37, 9)]), (5, 61, 6, [(17, 29)])]:
        arr = make_rgba(w, h, seed)
        src = save(f"src_{w}x{h}_rgba", arr)
        im = Image.fromarray(arr, "RGBA")
        for tw, th in targets:
            out = im.resize((tw, th), Image.Resampling.LANCZOS)
            index["resize_rgba"].append({
                "src": src,
                "out": save(f"out_{w}x{h}_rgba_to_{tw}x{th}", np.array(out)),
                "over_white": save(f"out_{w}x{h}_rgba_to_{tw}x{th}_white", np.array(composite_white(out))),
            })

    # Idefics3 pipelines: (name, source, longest_edge, max_image_size, do_resize, do_image_splitting).
    pipes = [
        ("rgba_37x23", make_rgba(37, 23, 7), 64, 32, True, True),
        ("rgb_5x61", make_rgb(5, 61, 8), 64, 32, True, True),
        ("rgb_10x7_upscale", make_rgb(10, 7, 9), 48, 16, True, True),
        ("rgb_70x45_nosplit", make_rgb(70, 45, 10), 64, 32, True, False),
    ]
    for name, arr, le, ms, do_resize, split in pipes:
        mode = "RGB" if arr.shape[2] == 3 else "RGBA"
        stage1, stage2, rows, cols, tiles = idefics3(Image.fromarray(arr, mode), le, ms, do_resize, split)
        index["idefics3"].append({
            "name": name,
            "src": save(f"pipe_{name}_src", arr),
            "longest_edge": le,
            "max_image_size": ms,
            "do_resize": do_resize,
            "do_image_splitting": split,
            "stage1_hw": [stage1.height, stage1.width],
            "stage2_hw": [stage2.height, stage2.width],
            "rows": rows,
            "cols": cols,
            "tiles": [save(f"pipe_{name}_tile{i}", np.array(t)) for i, t in enumerate(tiles)],
        })

    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(files) + 1} files, {total} bytes, to {os.path.normpath(OUT)} (Pillow {PIL.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
