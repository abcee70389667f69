#!/usr/bin/env python3
"""The low-quality variant of the long-tailed training set, for the adaptive curriculum's arm of the
experiment (METHOD §5, "Adaptive (low-quality data)"): every image of data/fashion-lt/train blurred
(two passes of a 3x3 box filter) and noised (keyed Gaussian noise, sigma 24/255), like a camera-trap
shot, and a validation set held out of it.

    python3 scripts/data/make_lq.py            # writes data/fashion-lt-lq/{train,val}/<class>/*.png

- val: per class, the 10% of images (at least 3, at most 10) first in the order
  sha256('20241124/lq-val/<index>'); they are left out of train. The adaptive schedule's trainer
  reports p(true class) on them (and on their synthetic variants at every level) after each stage.
- Deterministic: the same input files give the same bytes (PNG written as data/README describes).
Standard library only; about 20 s.
"""
import argparse
import hashlib
import os
import random
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from split_fashion import SEED, png_grey  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIGMA = 24.0


def read_grey(path):
    """The 8-bit pixels and size of a greyscale PNG (filter type 0 or 1 rows)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", payload[:10])
            if depth != 8 or colour != 0:
                raise SystemExit(f"{path}: expected 8-bit greyscale")
            size = (width, height)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    width, height = size
    raw = zlib.decompress(idat)
    pixels = bytearray()
    for r in range(height):
        row = raw[r * (width + 1):(r + 1) * (width + 1)]
        if row[0] == 0:
            pixels += row[1:]
        elif row[0] == 1:
            prev = 0
            for v in row[1:]:
                prev = (prev + v) & 0xFF
                pixels.append(prev)
        else:
            raise SystemExit(f"{path}: row filter {row[0]} not supported")
    return list(pixels), width, height


def box(pixels, width, height):
    out = []
    for y in range(height):
        for x in range(width):
            total, n = 0, 0
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < height and 0 <= xx < width:
                        total += pixels[yy * width + xx]
                        n += 1
            out.append(total / n)
    return out


def degrade(pixels, width, height, name):
    blurred = box(box(pixels, width, height), width, height)
    rng = random.Random(hashlib.sha256(f"{SEED}/lq-noise/{name}".encode()).digest())
    return bytes(max(0, min(255, round(v + rng.gauss(0.0, SIGMA)))) for v in blurred)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=os.path.join(REPO, "data", "fashion-lt", "train"))
    ap.add_argument("--out", default=os.path.join(REPO, "data", "fashion-lt-lq"))
    args = ap.parse_args()
    if not os.path.isdir(args.source):
        raise SystemExit(f"{args.source}: missing (run scripts/setup.sh --data first)")
    written = {"train": 0, "val": 0}
    for cls in sorted(os.listdir(args.source)):
        folder = os.path.join(args.source, cls)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
        order = sorted(names, key=lambda n: hashlib.sha256(f"{SEED}/lq-val/{n[:-4].split('-')[-1]}".encode()).digest())
        held = set(order[:max(3, min(10, len(names) // 10))])
        for name in names:
            part = "val" if name in held else "train"
            target = os.path.join(args.out, part, cls, name)
            pixels, width, height = read_grey(os.path.join(folder, name))
            png = png_grey(degrade(pixels, width, height, f"{cls}/{name}"), width, height)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not (os.path.exists(target) and open(target, "rb").read() == png):
                tmp = target + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(png)
                os.replace(tmp, target)
            written[part] += 1
    print(f"{args.out}: {written['train']} training and {written['val']} validation images")


if __name__ == "__main__":
    main()
