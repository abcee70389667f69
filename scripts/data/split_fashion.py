#!/usr/bin/env python3
"""Build discl's long-tailed Fashion-MNIST task from the official idx files.

Pure Python standard library only: this runs from scripts/setup.sh before any pip install.

Outputs (under --out, default <repo>/data):
  fashion-lt/train/<class>/train-NNNNN.png  half A, long-tailed (imbalance ratio 100)
  fashion-lt/test/<class>/test-NNNN.png     the official 10k test set
  fashion-lt/split.json                     counts, groups, seed, names
  fashion-b/train/<class>/train-NNNNN.png   half B, balanced (3000 per class)

Split (deterministic, independent of Python version and platform):
  every random choice is "sort by sha256('<seed>/<purpose>/<official index>')".
  1. per class, the 6000 training images are ordered by key 'half'; the first 3000 form half A, the rest half B.
  2. per class c (label order), half A is ordered by key 'lt' and the first n_c = floor(3000 * 100^(-c/9) + 0.5)
     are kept: 3000 1798 1078 646 387 232 139 83 50 30 (7,443 images).
  3. many / medium / few groups: ImageNet-LT uses many > 100, medium 20..100, few < 20 on a set whose per-class
     counts run from 5 to 1280. We keep each threshold at the same relative position on the log-count axis
     between the smallest and the largest class (the profile is exponential in the class index, so this is the
     scale-free reading): t = n_min * (n_max / n_min)^(log(T / 5) / log(1280 / 5)). With n_min = 30, n_max = 3000:
     T = 100 -> 361.08, T = 20 -> 94.87. So many: n > 361, medium: 95 <= n <= 361, few: n < 95, giving
     many = 5 classes (0-4), medium = 2 (5, 6), few = 3 (7, 8, 9). (Scaling the thresholds by the largest class
     alone, 100/1280 and 20/1280 of 3000, would leave a single few-shot class.)

PNG format: 8-bit greyscale (colour type 0), 28x28, no interlace, filter type 0 on every row, and the zlib stream
written by hand as one *stored* (uncompressed) deflate block (header 78 01, adler32 trailer), so the bytes do not
depend on the zlib implementation (zlib vs zlib-ng compress differently). Chunks: IHDR, IDAT, IEND only.

Digest: sha256 over the lines "<relative path>\\t<sha256 of file>\\n" of every written file, sorted by path
(paths relative to --out, '/'-separated). Committed in scripts/data/fashion-split.digest as "sha256 <hex>".

Usage:
  python3 scripts/data/split_fashion.py            # build (quick no-op when outputs match the digest)
  python3 scripts/data/split_fashion.py --check    # recompute the digest of what is on disk; exit 1 on mismatch
  python3 scripts/data/split_fashion.py --fixture tests/fixtures/fashion-tiny   # (re)write the tiny test fixture
"""
import argparse
import gzip
import hashlib
import json
import math
import os
import shutil
import struct
import sys
import zlib

SEED = 20241124
IMBALANCE = 100
PER_HALF = 3000
FIXTURE_PER_CLASS = 12
CLASSES = ["tshirt-top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
DISPLAY = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# ImageNet-LT reference points (per-class train counts 5..1280, many > 100, few < 20).
REF_MIN, REF_MAX, REF_MANY, REF_FEW = 5, 1280, 100, 20

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DIGEST_FILE = os.path.join(HERE, "fashion-split.digest")
DEFAULT_SOURCE = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
OUT_DIRS = ("fashion-lt", "fashion-b")


# ---------------------------------------------------------------- idx reading
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != math.prod(dims):
        raise ValueError(f"{path}: size mismatch")
    return dims, body, hashlib.sha256(data).hexdigest()


def load(source, split):
    prefix = "train" if split == "train" else "t10k"
    (n, h, w), images, img_sha = read_idx(os.path.join(source, f"{prefix}-images-idx3-ubyte.gz"))
    (m,), labels, lab_sha = read_idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte.gz"))
    if n != m or (h, w) != (28, 28):
        raise ValueError(f"{split}: unexpected shapes {n}x{h}x{w}, {m} labels")
    size = h * w
    pixels = [images[i * size:(i + 1) * size] for i in range(n)]
    return pixels, list(labels), {"images_sha256": img_sha, "labels_sha256": lab_sha}


# ---------------------------------------------------------------- PNG writing
def _chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_grey(pixels, width=28, height=28):
    raw = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))
    assert len(raw) <= 0xFFFF
    # zlib stream: CMF/FLG (deflate, 32K window, no dict, level hint 0), one final stored block, adler32.
    stream = (b"\x78\x01" + b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
              + struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


# ---------------------------------------------------------------- the split
def key(purpose, index):
    return hashlib.sha256(f"{SEED}/{purpose}/{index}".encode()).digest()


def lt_count(c):
    return math.floor(PER_HALF * IMBALANCE ** (-c / 9) + 0.5)


def thresholds(n_min, n_max):
    def scale(t):
        pos = math.log(t / REF_MIN) / math.log(REF_MAX / REF_MIN)
        return n_min * (n_max / n_min) ** pos
    return scale(REF_MANY), scale(REF_FEW)


def group_of(n, many_t, few_t):
    if n > many_t:
        return "many"
    if n < few_t:
        return "few"
    return "medium"


def build_split(train_labels):
    half_a, half_b, lt = {}, {}, {}
    for c in range(10):
        idx = [i for i, y in enumerate(train_labels) if y == c]
        if len(idx) != 2 * PER_HALF:
            raise ValueError(f"class {c}: {len(idx)} training images, expected {2 * PER_HALF}")
        idx.sort(key=lambda i: key("half", i))
        half_a[c] = sorted(idx[:PER_HALF])
        half_b[c] = sorted(idx[PER_HALF:])
        chosen = sorted(half_a[c], key=lambda i: key("lt", i))[:lt_count(c)]
        lt[c] = sorted(chosen)
    return half_a, half_b, lt


def fixture_choice(test_labels):
    out = {}
    for c in range(10):
        idx = [i for i, y in enumerate(test_labels) if y == c]
        out[c] = sorted(sorted(idx, key=lambda i: key("fixture", i))[:FIXTURE_PER_CLASS])
    return out


def planned_files(source):
    """Return {relative path: bytes} of every output file, and the split summary."""
    train_px, train_y, train_src = load(source, "train")
    test_px, test_y, test_src = load(source, "test")
    _, half_b, lt = build_split(train_y)
    counts = [len(lt[c]) for c in range(10)]
    many_t, few_t = thresholds(min(counts), max(counts))
    groups = {"many": [], "medium": [], "few": []}
    for c in range(10):
        groups[group_of(counts[c], many_t, few_t)].append(c)
    if not all(groups.values()):
        raise ValueError(f"empty class group: {groups}")

    files = {}
    for c in range(10):
        for i in lt[c]:
            files[f"fashion-lt/train/{CLASSES[c]}/train-{i:05d}.png"] = png_grey(train_px[i])
        for i in half_b[c]:
            files[f"fashion-b/train/{CLASSES[c]}/train-{i:05d}.png"] = png_grey(train_px[i])
    test_counts = [0] * 10
    for i, y in enumerate(test_y):
        test_counts[y] += 1
        files[f"fashion-lt/test/{CLASSES[y]}/test-{i:04d}.png"] = png_grey(test_px[i])

    summary = {
        "dataset": "Fashion-MNIST (official idx files; Zalando Research, MIT license)",
        "source": {"train": train_src, "test": test_src},
        "seed": SEED,
        "selection": "per purpose, sort official indices by sha256('<seed>/<purpose>/<index>'); "
                     "purpose 'half' splits each class 3000/3000 into half A / half B, "
                     "purpose 'lt' picks the first n_c of half A",
        "imbalance_ratio": IMBALANCE,
        "count_formula": "n_c = floor(3000 * 100^(-c/9) + 0.5), c = class index in label order",
        "classes": CLASSES,
        "display_names": DISPLAY,
        "counts": {
            "fashion-lt/train": counts,
            "fashion-lt/test": test_counts,
            "fashion-b/train": [len(half_b[c]) for c in range(10)],
        },
        "totals": {"fashion-lt/train": sum(counts), "fashion-lt/test": len(test_y),
                   "fashion-b/train": sum(len(v) for v in half_b.values())},
        "groups": groups,
        "group_names": {g: [CLASSES[c] for c in cs] for g, cs in groups.items()},
        "group_rule": {
            "many": f"n > {many_t:.2f}", "medium": f"{few_t:.2f} <= n <= {many_t:.2f}", "few": f"n < {few_t:.2f}",
            "derivation": "ImageNet-LT thresholds (many > 100, few < 20 on per-class counts 5..1280) kept at the "
                          "same relative position on the log-count axis between this set's smallest and largest "
                          "class: t = n_min * (n_max/n_min)^(log(T/5)/log(1280/5))",
        },
        "half_b_disjoint_from_half_a": True,
        "png": "8-bit greyscale 28x28, filter 0, one stored deflate block (deterministic bytes)",
    }
    files["fashion-lt/split.json"] = (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()
    return files, summary, (test_px, test_y)


# ---------------------------------------------------------------- digests
def digest_of(entries):
    """entries: iterable of (relative path, file sha256 hex)."""
    h = hashlib.sha256()
    for rel, sha in sorted(entries):
        h.update(f"{rel}\t{sha}\n".encode())
    return h.hexdigest()


def digest_on_disk(out):
    entries = []
    for top in OUT_DIRS:
        root = os.path.join(out, top)
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    sha = hashlib.sha256(f.read()).hexdigest()
                entries.append((os.path.relpath(path, out).replace(os.sep, "/"), sha))
    return digest_of(entries), len(entries)


def committed_digest():
    try:
        with open(DIGEST_FILE) as f:
            algo, hexd = f.read().split()
    except FileNotFoundError:
        return None
    if algo != "sha256":
        raise ValueError(f"{DIGEST_FILE}: unsupported algorithm {algo}")
    return hexd


def write_fixture(dest, source):
    test_px, test_y, _ = load(source, "test")
    chosen = fixture_choice(test_y)
    for c in range(10):
        d = os.path.join(dest, CLASSES[c])
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        for i in chosen[c]:
            with open(os.path.join(d, f"test-{i:04d}.png"), "wb") as f:
                f.write(png_grey(test_px[i]))
    print(f"fixture: {10 * FIXTURE_PER_CLASS} images written to {dest}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="folder with the official *-ubyte.gz files")
    ap.add_argument("--out", default=os.path.join(REPO, "data"), help="output root (default <repo>/data)")
    ap.add_argument("--check", action="store_true", help="verify the outputs on disk against the committed digest")
    ap.add_argument("--write-digest", action="store_true", help="(re)write scripts/data/fashion-split.digest")
    ap.add_argument("--fixture", metavar="DIR", help="write the 12-per-class test fixture to DIR and exit")
    args = ap.parse_args()

    if args.fixture:
        write_fixture(args.fixture, args.source)
        return 0

    expected = committed_digest()
    if args.check:
        got, n = digest_on_disk(args.out)
        print(f"sha256 {got} ({n} files)")
        if expected is None or got != expected:
            print(f"MISMATCH: expected sha256 {expected}", file=sys.stderr)
            return 1
        print("ok")
        return 0

    if expected is not None and not args.write_digest and all(
            os.path.isdir(os.path.join(args.out, d)) for d in OUT_DIRS):
        got, n = digest_on_disk(args.out)
        if got == expected:
            print(f"up to date: sha256 {got} ({n} files)")
            return 0
        print("outputs differ from the committed digest; rebuilding")

    files, summary, _ = planned_files(args.source)
    digest = digest_of((rel, hashlib.sha256(b).hexdigest()) for rel, b in files.items())
    if expected is not None and digest != expected and not args.write_digest:
        print(f"ERROR: computed split sha256 {digest} differs from committed {expected} "
              f"(different source files?)", file=sys.stderr)
        return 1
    for d in OUT_DIRS:
        shutil.rmtree(os.path.join(args.out, d), ignore_errors=True)
    made = set()
    for rel, data in files.items():
        path = os.path.join(args.out, *rel.split("/"))
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        with open(path, "wb") as f:
            f.write(data)
    got, n = digest_on_disk(args.out)
    if got != digest:
        print(f"ERROR: digest on disk {got} != computed {digest}", file=sys.stderr)
        return 1
    if args.write_digest or expected is None:
        with open(DIGEST_FILE, "w") as f:
            f.write(f"sha256 {digest}\n")
        print(f"wrote {DIGEST_FILE}")
    t = summary["totals"]
    print(f"fashion-lt/train {t['fashion-lt/train']}  fashion-lt/test {t['fashion-lt/test']}  "
          f"fashion-b/train {t['fashion-b/train']}  groups {summary['group_names']}")
    print(f"sha256 {digest} ({n} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
