"""BLAKE3 of short messages (one 64-byte block), vectorised with numpy: what discl's mix hashes.

discl keys every mix choice with BLAKE3 in derive-key mode ("discl 2026-11 mix v1") over
(seed, stage, epoch, item); the first 8 bytes of the hash, little-endian, are the key. Every such
message fits one block, so one hash is one compression, done here on whole columns at once.
"""
import numpy as np

IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
CHUNK_START, CHUNK_END, ROOT, DERIVE_KEY_CONTEXT, DERIVE_KEY_MATERIAL = 1, 2, 8, 32, 64
U32 = np.uint32


def _column(x, start, end, n):
    """Rows start..end of a word that is a scalar or a column; a fresh array to work in."""
    if isinstance(x, np.ndarray) and x.ndim:
        return x[start:end].astype(U32)
    return np.full(end - start, x, dtype=U32)


def compress(cv, words, block_len, flags, n, out_words=8, chunk=16384):
    """The root output of one block for `n` messages: `cv` 8 key words, `words` 16 message
    words (None for a zero word; each a uint32 scalar or a column of `n`), `block_len` bytes
    (a scalar or a column). Returns the first `out_words` output words, as columns. Works on
    chunks that stay in cache, in place."""
    out = [np.empty(n, dtype=U32) for _ in range(out_words)]
    spare = np.empty(chunk, dtype=U32)
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        t = spare[: end - start]
        m = [w if w is None or not (isinstance(w, np.ndarray) and w.ndim) else w[start:end] for w in words]
        v = [_column(x, start, end, n) for x in list(cv) + IV[:4] + [0, 0, block_len, flags]]

        def g(a, b, c, d, mx, my):
            va, vb, vc, vd = v[a], v[b], v[c], v[d]
            va += vb
            if mx is not None:
                va += mx
            vd ^= va
            np.right_shift(vd, 16, out=t)
            vd <<= 16
            vd |= t
            vc += vd
            vb ^= vc
            np.right_shift(vb, 12, out=t)
            vb <<= 20
            vb |= t
            va += vb
            if my is not None:
                va += my
            vd ^= va
            np.right_shift(vd, 8, out=t)
            vd <<= 24
            vd |= t
            vc += vd
            vb ^= vc
            np.right_shift(vb, 7, out=t)
            vb <<= 25
            vb |= t

        for r in range(7):
            g(0, 4, 8, 12, m[0], m[1])
            g(1, 5, 9, 13, m[2], m[3])
            g(2, 6, 10, 14, m[4], m[5])
            g(3, 7, 11, 15, m[6], m[7])
            g(0, 5, 10, 15, m[8], m[9])
            g(1, 6, 11, 12, m[10], m[11])
            g(2, 7, 8, 13, m[12], m[13])
            g(3, 4, 9, 14, m[14], m[15])
            m = [m[i] for i in PERMUTATION]
        for i, column in enumerate(out):
            np.bitwise_xor(v[i], v[i + 8], out=column[start:end])
    return out


def _words(data: bytes):
    block = data.ljust(64, b"\0")
    return [U32(int.from_bytes(block[i:i + 4], "little")) or None for i in range(0, 64, 4)]


def derive_key_context(context: str):
    """The context key of BLAKE3's derive-key mode (a context of at most 64 bytes)."""
    data = context.encode()
    assert len(data) <= 64
    flags = CHUNK_START | CHUNK_END | ROOT | DERIVE_KEY_CONTEXT
    return [U32(w[0]) for w in compress(IV, _words(data), len(data), flags, 1)]


def derive_key_first_u64(key, words, block_len, n):
    """The first 8 bytes (little-endian u64) of BLAKE3 derive-key material of at most 64 bytes,
    for `n` messages."""
    lo, hi = compress(key, words, block_len, CHUNK_START | CHUNK_END | ROOT | DERIVE_KEY_MATERIAL, n, 2)
    return lo.astype(np.uint64) | (hi.astype(np.uint64) << np.uint64(32))


def u64_words(x):
    """A u64 column as its two little-endian u32 words."""
    x = np.asarray(x, dtype=np.uint64)
    return (x & np.uint64(0xFFFFFFFF)).astype(U32), (x >> np.uint64(32)).astype(U32)


def bytes_words(strings, width):
    """A column of strings (at most `width` bytes, a multiple of 4) as (width / 4) u32 word
    columns, zero-padded, and their byte lengths."""
    raw = np.asarray(strings, dtype=f"S{width}")
    lengths = np.char.str_len(raw).astype(U32)
    words = np.frombuffer(raw.tobytes(), dtype="<u4").reshape(len(raw), width // 4)
    return [words[:, i].copy() for i in range(width // 4)], lengths
