#!/usr/bin/env python3
"""Byte-exact fixtures for calpaca's ggml block quantizers (tests/fixtures/quant/).

What it computes, for each type T in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K:
  T.f32      input: little-endian float32 values (several blocks of varied data, seeded)
  T.bin      the blocks ggml's reference quantizer (`quantize_row_T_ref`) makes from them
  T.deq.f32  those blocks dequantized by llama.cpp's own numpy code (gguf.quants), when it has
             a dequantizer for T (all but Q8_1 / Q8_K): an independent check of our layouts
tests/unit/test_quant_formats.cpp requires byte-identical blocks and matching dequantization.

Where the expected bytes come from (independent of the C++ code under test):
  * Q4_0 Q4_1 Q5_0 Q5_1 Q8_0: `gguf.quants.quantize` from the PyPI `gguf` package
    (gguf-py, maintained in the llama.cpp repository: llama.cpp's numpy port of its reference
    quantizers).
  * Q8_1 and the K-quants (gguf-py has no quantizer for them): the numpy implementation in this
    file, written from the format description (ggml-common.h block layouts and the reference
    search described in src/calpaca/tensor/quant_kquants.cpp), scalar float32 arithmetic in
    ggml's operation order.
  * Optional cross-check (--ggml-src DIR, DIR = a llama.cpp source tree's ggml/ folder, e.g.
    from `pip download --no-deps --no-binary :all: llama-cpp-python`, which vendors it):
    compiles ggml's own ggml-quants.c with -ffp-contract=off into a temporary shared library
    and asserts that its quantize_row_*_ref produce the same bytes for every type.

Seed: numpy default_rng(20240620 + type index).

Run (needs numpy and gguf in the reference venv):
  /opt/calpaca-ref/bin/pip install --no-deps gguf      # once
  /opt/calpaca-ref/bin/python tools/reference/make_quant_fixtures.py [--ggml-src .../llama.cpp/ggml]
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

F = np.float32
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "quant")

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]
BLOCK = {t: (256 if t.endswith("_K") else 32) for t in TYPES}
TYPE_SIZE = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q8_1": 36,
             "Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "Q8_K": 292}


# ----------------------------------------------------------------------------- scalar helpers
def nearest_int(v: np.float32) -> int:
    """ggml's nearest_int: round to nearest, ties to even (float32 input)."""
    return int(np.rint(F(v)))


def roundf(v: np.float32) -> int:
    """C roundf: ties away from zero (exact: float32 + 0.5 is exact in float64)."""
    a = math.floor(abs(float(v)) + 0.5)
    return int(a if v >= 0 else -a)


def f16_bits(v) -> int:
    return int(np.array([F(v)], dtype=np.float32).astype(np.float16).view(np.uint16)[0])


def f16_val(bits: int) -> np.float32:
    return F(np.array([bits], dtype=np.uint16).view(np.float16)[0])


def u16le(v: int) -> bytes:
    return int(v).to_bytes(2, "little")


def clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


# ----------------------------------------------------------------------------- Q8_1 (legacy)
def q8_1(x: np.ndarray) -> bytes:
    out = bytearray()
    for blk in x.reshape(-1, 32):
        amax = F(0)
        for v in blk:
            amax = max(amax, F(abs(v)))
        d = F(amax / F(127))
        idv = F(F(1) / d) if d != 0 else F(0)
        qs = [roundf(F(v * idv)) for v in blk]
        s = F(F(sum(qs)) * d)
        out += u16le(f16_bits(d)) + u16le(f16_bits(s)) + bytes(q & 0xFF for q in qs)
    return bytes(out)


# ----------------------------------------------------------------------------- K-quant searches
GROUP_MAX_EPS = F(1e-15)


def symmetric_search(x, nmax):
    """Q6_K's per-16 scale search (x^2-weighted, 19 candidates). Returns (scale, L=code+nmax)."""
    n = len(x)
    amax, mx = F(0), F(0)
    for v in x:
        if F(abs(v)) > amax:
            amax, mx = F(abs(v)), v
    if amax < GROUP_MAX_EPS:
        return F(0), [0] * n

    def fit(iscale):
        slx, sl2 = F(0), F(0)
        for v in x:
            l = clamp(nearest_int(F(iscale * v)), -nmax, nmax - 1)
            w = F(v * v)
            slx = F(slx + F(F(w * v) * F(l)))
            sl2 = F(sl2 + F(F(w * F(l)) * F(l)))
        return slx, sl2

    def codes(iscale):
        return [nmax + clamp(nearest_int(F(iscale * v)), -nmax, nmax - 1) for v in x]

    iscale = F(F(-nmax) / mx)
    sumlx, suml2 = fit(iscale)
    L = codes(iscale)
    scale = F(sumlx / suml2) if suml2 != 0 else F(0)
    best = F(scale * sumlx)
    for i in range(-9, 10):
        if i == 0:
            continue
        iscale = F(F(-F(F(nmax) + F(F(0.1) * F(i)))) / mx)
        sumlx, suml2 = fit(iscale)
        if suml2 > 0 and F(sumlx * sumlx) > F(best * suml2):
            L = codes(iscale)
            scale = F(sumlx / suml2)
            best = F(scale * sumlx)
    return scale, L


def q3_search(x, nmax):
    """Q3_K's per-16 search with coordinate descent. Returns (scale, L=code+nmax, or all 0)."""
    n = len(x)
    amax, mx = F(0), F(0)
    for v in x:
        if F(abs(v)) > amax:
            amax, mx = F(abs(v)), v
    if amax < GROUP_MAX_EPS:
        return F(0), [0] * n
    iscale = F(F(-nmax) / mx)
    L = [0] * n
    sumlx, suml2 = F(0), F(0)
    for i, v in enumerate(x):
        l = clamp(nearest_int(F(iscale * v)), -nmax, nmax - 1)
        L[i] = l
        w = F(v * v)
        sumlx = F(sumlx + F(F(w * v) * F(l)))
        suml2 = F(suml2 + F(F(w * F(l)) * F(l)))
    for _ in range(5):
        changed = 0
        for i, v in enumerate(x):
            w = F(v * v)
            slx = F(sumlx - F(F(w * v) * F(L[i])))
            if slx > 0:
                sl2 = F(suml2 - F(F(w * F(L[i])) * F(L[i])))
                nl = clamp(nearest_int(F(F(v * sl2) / slx)), -nmax, nmax - 1)
                if nl != L[i]:
                    slx = F(slx + F(F(w * v) * F(nl)))
                    sl2 = F(sl2 + F(F(w * F(nl)) * F(nl)))
                    if sl2 > 0 and F(F(slx * slx) * suml2) > F(F(sumlx * sumlx) * sl2):
                        L[i], sumlx, suml2 = nl, slx, sl2
                        changed += 1
        if not changed:
            break
    L = [l + nmax for l in L]
    return (F(sumlx / suml2) if suml2 > 0 else F(0)), L


def affine_search(x, nmax, weights, rmin, rdelta, nstep, use_mad):
    """Scale+min search (Q2_K, Q4_K, Q5_K). Returns (scale, -min, L)."""
    n = len(x)
    mn, mx = x[0], x[0]
    sum_w = weights[0]
    sum_x = F(sum_w * x[0])
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w = F(sum_w + weights[i])
        sum_x = F(sum_x + F(weights[i] * x[i]))
    if mn > 0:
        mn = F(0)
    if mx == mn:
        return F(0), F(-mn), [0] * n

    def err(diff):
        return F(abs(diff)) if use_mad else F(diff * diff)

    iscale = F(F(nmax) / F(mx - mn))
    scale = F(F(1) / iscale)
    best_error = F(0)
    L = [0] * n
    for i in range(n):
        L[i] = clamp(nearest_int(F(iscale * F(x[i] - mn))), 0, nmax)
        diff = F(F(F(scale * F(L[i])) + mn) - x[i])
        best_error = F(best_error + F(weights[i] * err(diff)))
    for step in range(nstep + 1):
        iscale = F(F(F(rmin + F(rdelta * F(step))) + F(nmax)) / F(mx - mn))
        sum_l = sum_l2 = sum_xl = F(0)
        Laux = [0] * n
        for i in range(n):
            l = clamp(nearest_int(F(iscale * F(x[i] - mn))), 0, nmax)
            Laux[i] = l
            w = weights[i]
            sum_l = F(sum_l + F(w * F(l)))
            sum_l2 = F(sum_l2 + F(F(w * F(l)) * F(l)))
            sum_xl = F(sum_xl + F(F(w * F(l)) * x[i]))
        D = F(F(sum_w * sum_l2) - F(sum_l * sum_l))
        if D > 0:
            this_scale = F(F(F(sum_w * sum_xl) - F(sum_x * sum_l)) / D)
            this_min = F(F(F(sum_l2 * sum_x) - F(sum_l * sum_xl)) / D)
            if this_min > 0:
                this_min = F(0)
                this_scale = F(sum_xl / sum_l2)
            cur = F(0)
            for i in range(n):
                diff = F(F(F(this_scale * F(Laux[i])) + this_min) - x[i])
                cur = F(cur + F(weights[i] * err(diff)))
            if cur < best_error:
                L, best_error, scale, mn = Laux, cur, this_scale, this_min
    return scale, F(-mn), L


def pack_2bit(L):
    qs = bytearray(64)
    for h in (0, 128):
        for l in range(32):
            qs[h // 4 + l] = (L[h + l] | (L[h + l + 32] << 2) | (L[h + l + 64] << 4) | (L[h + l + 96] << 6)) & 0xFF
    return bytes(qs)


def u8(v: int) -> int:
    return v & 0xFF


# ----------------------------------------------------------------------------- K-quants
def q2_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for sb in x.reshape(-1, 256):
        L = [0] * 256
        scales, mins = [F(0)] * 16, [F(0)] * 16
        max_scale = max_min = F(0)
        for j in range(16):
            xs = sb[16 * j:16 * j + 16]
            w = [F(abs(v)) for v in xs]
            scales[j], mins[j], L[16 * j:16 * j + 16] = affine_search(xs, 3, w, F(-0.5), F(0.1), 15, True)
            max_scale = scales[j] if scales[j] > max_scale else max_scale
            max_min = mins[j] if mins[j] > max_min else max_min
        sc = [0] * 16
        if max_scale > 0:
            iscale = F(F(15) / max_scale)
            sc = [u8(nearest_int(F(iscale * s))) for s in scales]
            d = f16_bits(F(max_scale / F(15)))
        else:
            d = f16_bits(F(0))
        if max_min > 0:
            iscale = F(F(15) / max_min)
            sc = [u8(sc[j] | (nearest_int(F(iscale * mins[j])) << 4)) for j in range(16)]
            dmin = f16_bits(F(max_min / F(15)))
        else:
            dmin = f16_bits(F(0))
        for j in range(16):
            dd = F(f16_val(d) * F(sc[j] & 0xF))
            if dd == 0:
                continue
            dm = F(f16_val(dmin) * F(sc[j] >> 4))
            for i in range(16):
                L[16 * j + i] = clamp(nearest_int(F(F(sb[16 * j + i] + dm) / dd)), 0, 3)
        out += bytes(sc) + pack_2bit(L) + u16le(d) + u16le(dmin)
    return bytes(out)


def q3_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for sb in x.reshape(-1, 256):
        L = [0] * 256
        scales = [F(0)] * 16
        max_scale = amax = F(0)
        for j in range(16):
            scales[j], L[16 * j:16 * j + 16] = q3_search(sb[16 * j:16 * j + 16], 4)
            if F(abs(scales[j])) > amax:
                amax, max_scale = F(abs(scales[j])), scales[j]
        s = [0] * 12
        if max_scale != 0:
            iscale = F(F(-32) / max_scale)
            for j in range(16):
                l = nearest_int(F(iscale * scales[j]))
                l = ((l + 128) & 0xFF) - 128  # int8_t conversion
                l = clamp(l, -32, 31) + 32
                if j < 8:
                    s[j] = l & 0xF
                else:
                    s[j - 8] |= (l & 0xF) << 4
                s[j % 4 + 8] |= (l >> 4) << (2 * (j // 4))
            d = f16_bits(F(F(1) / iscale))
        else:
            d = f16_bits(F(0))
        for j in range(16):
            lo = s[j] & 0xF if j < 8 else s[j - 8] >> 4
            sc = (lo | (((s[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
            dd = F(f16_val(d) * F(sc))
            if dd == 0:
                continue
            for i in range(16):
                L[16 * j + i] = clamp(nearest_int(F(sb[16 * j + i] / dd)), -4, 3) + 4
        hmask = bytearray(32)
        low = [0] * 256
        for i in range(256):
            l = L[i]
            if l > 3:
                hmask[i % 32] |= 1 << (i // 32)
                l -= 4
            low[i] = l
        out += bytes(hmask) + pack_2bit(low) + bytes(s) + u16le(d)
    return bytes(out)


def k4_superblock(sb, nmax, rmin, nstep):
    """Q4_K/Q5_K shared part: returns (d bits, dmin bits, 12 scale bytes, L[256])."""
    L = [0] * 256
    scales, mins = [F(0)] * 8, [F(0)] * 8
    max_scale = max_min = F(0)
    for j in range(8):
        xs = sb[32 * j:32 * j + 32]
        sum_x2 = F(0)
        for v in xs:
            sum_x2 = F(sum_x2 + F(v * v))
        av_x = F(np.sqrt(F(sum_x2 / F(32))))
        w = [F(av_x + F(abs(v))) for v in xs]
        scales[j], mins[j], L[32 * j:32 * j + 32] = affine_search(xs, nmax, w, rmin, F(0.1), nstep, False)
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = F(F(63) / max_scale) if max_scale > 0 else F(0)
    inv_min = F(F(63) / max_min) if max_min > 0 else F(0)
    ls = [min(63, u8(nearest_int(F(inv_scale * v)))) for v in scales]
    lm = [min(63, u8(nearest_int(F(inv_min * v)))) for v in mins]
    s = [0] * 12
    for j in range(8):
        if j < 4:
            s[j], s[j + 4] = ls[j], lm[j]
        else:
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
            s[j - 4] |= (ls[j] >> 4) << 6
            s[j] |= (lm[j] >> 4) << 6
    d = f16_bits(F(max_scale / F(63)))
    dmin = f16_bits(F(max_min / F(63)))
    for j in range(8):
        if j < 4:
            sc, m = s[j] & 63, s[j + 4] & 63
        else:
            sc, m = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
        dd = F(f16_val(d) * F(sc))
        if dd == 0:
            continue
        dm = F(f16_val(dmin) * F(m))
        for i in range(32):
            L[32 * j + i] = clamp(nearest_int(F(F(sb[32 * j + i] + dm) / dd)), 0, nmax)
    return d, dmin, bytes(s), L


def q4_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for sb in x.reshape(-1, 256):
        d, dmin, s, L = k4_superblock(sb, 15, F(-1.0), 20)
        qs = bytes(L[64 * p + l] | (L[64 * p + 32 + l] << 4) for p in range(4) for l in range(32))
        out += u16le(d) + u16le(dmin) + s + qs
    return bytes(out)


def q5_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for sb in x.reshape(-1, 256):
        d, dmin, s, L = k4_superblock(sb, 31, F(-0.5), 15)
        qh = bytearray(32)
        qs = bytearray(128)
        for p in range(4):
            for l in range(32):
                l1, l2 = L[64 * p + l], L[64 * p + 32 + l]
                if l1 > 15:
                    l1 -= 16
                    qh[l] |= 1 << (2 * p)
                if l2 > 15:
                    l2 -= 16
                    qh[l] |= 1 << (2 * p + 1)
                qs[32 * p + l] = l1 | (l2 << 4)
        out += u16le(d) + u16le(dmin) + s + bytes(qh) + bytes(qs)
    return bytes(out)


def q6_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for sb in x.reshape(-1, 256):
        L = [0] * 256
        scales = [F(0)] * 16
        max_scale = max_abs = F(0)
        for j in range(16):
            scales[j], L[16 * j:16 * j + 16] = symmetric_search(sb[16 * j:16 * j + 16], 32)
            if F(abs(scales[j])) > max_abs:
                max_abs, max_scale = F(abs(scales[j])), scales[j]
        if max_abs < GROUP_MAX_EPS:
            out += bytes(210)
            continue
        iscale = F(F(-128) / max_scale)
        d = f16_bits(F(F(1) / iscale))
        sc = [min(127, nearest_int(F(iscale * s))) for s in scales]
        for j in range(16):
            dd = F(f16_val(d) * F(sc[j]))
            if dd == 0:
                continue
            for i in range(16):
                L[16 * j + i] = clamp(nearest_int(F(sb[16 * j + i] / dd)), -32, 31) + 32
        ql, qh = bytearray(128), bytearray(64)
        for h in range(2):
            for l in range(32):
                q1, q2, q3, q4 = (L[128 * h + l + 32 * c] for c in range(4))
                ql[64 * h + l] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                ql[64 * h + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                qh[32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        out += bytes(ql) + bytes(qh) + bytes(v & 0xFF for v in sc) + u16le(d)
    return bytes(out)


def q8_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for sb in x.reshape(-1, 256):
        amax, mx = F(0), F(0)
        for v in sb:
            if F(abs(v)) > amax:
                amax, mx = F(abs(v)), v
        if amax == 0:
            out += bytes(292)  # ggml leaves bsums unset here; calpaca zeroes them
            continue
        iscale = F(F(-127) / mx)
        qs = [min(127, nearest_int(F(iscale * v))) for v in sb]
        bsums = [sum(qs[16 * j:16 * j + 16]) for j in range(16)]
        out += np.array([F(F(1) / iscale)], dtype="<f4").tobytes() + bytes(q & 0xFF for q in qs)
        out += b"".join(int(b).to_bytes(2, "little", signed=True) for b in bsums)
    return bytes(out)


# ----------------------------------------------------------------------------- inputs
def make_input(qtype: str, rng: np.random.Generator) -> np.ndarray:
    """Several blocks of varied data: gaussian, uniform, heavy-tailed, skewed, sparse, all
    zero, constant, one outlier, tiny and huge magnitudes, exact ties."""
    sub = 16 if qtype in ("Q2_K", "Q3_K", "Q6_K", "Q8_K") else 32
    bs = BLOCK[qtype] * (4 if BLOCK[qtype] == 32 else 1)  # 4 legacy blocks per kind of data
    blocks = [
        rng.normal(0, 1, bs),
        rng.uniform(-1, 1, bs),
        rng.standard_t(2, bs),
        rng.normal(0.7, 0.3, bs),                     # mostly positive (min > 0 paths)
        -np.abs(rng.normal(0, 2, bs)),                # all negative
        rng.normal(0, 1, bs) * (rng.random(bs) < 0.2),  # sparse
        np.zeros(bs),
        np.full(bs, 0.3),
        np.concatenate([rng.normal(0, 0.01, bs - 1), [5.0]]),
        rng.normal(0, 1e-5, bs),
        rng.normal(0, 300.0, bs),
        np.round(rng.uniform(-8, 8, bs)) / 4,          # many exact ties
    ]
    if BLOCK[qtype] == 256:
        # sub-blocks of very different scales, one all-zero sub-block
        v = rng.normal(0, 1, bs) * np.repeat(10.0 ** rng.uniform(-3, 1, bs // sub), sub)
        v[sub:2 * sub] = 0
        blocks.append(v)
    return np.concatenate(blocks).astype(np.float32)


OURS = {"Q8_1": q8_1, "Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k, "Q8_K": q8_k}


def expected_bytes(qtype: str, x: np.ndarray) -> bytes:
    if qtype in OURS:
        return OURS[qtype](x)
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as QT
    return quants.quantize(x.reshape(-1, BLOCK[qtype]), QT[qtype]).tobytes()


def gguf_dequant(qtype: str, blob: bytes):
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as QT
    try:
        arr = np.frombuffer(blob, dtype=np.uint8).reshape(-1, TYPE_SIZE[qtype])
        return quants.dequantize(arr, QT[qtype]).astype(np.float32).reshape(-1)
    except NotImplementedError:
        return None


# ----------------------------------------------------------------------------- ggml cross-check
STUBS = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
void ggml_abort(const char * file, int line, const char * fmt, ...) { (void)file; (void)line; (void)fmt; abort(); }
/* only used by the importance-matrix paths, never by quantize_row_*_ref */
size_t ggml_row_size(int type, int64_t ne) { (void)type; (void)ne; abort(); }
size_t ggml_type_size(int type) { (void)type; abort(); }
const char * ggml_type_name(int type) { (void)type; abort(); }
"""


def build_ggml(src: str, work: str) -> ctypes.CDLL:
    quants_c = os.path.join(src, "src", "ggml-quants.c")
    stub = os.path.join(work, "stub.c")
    with open(stub, "w") as f:
        f.write(STUBS)
    lib = os.path.join(work, "libggmlq.so")
    cmd = ["cc", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-std=gnu11", "-w",
           "-I", os.path.join(src, "include"), "-I", os.path.join(src, "src"), quants_c, stub, "-o", lib,
           "-Wl,--unresolved-symbols=ignore-all", "-lm"]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(lib)


def ggml_quantize(lib: ctypes.CDLL, qtype: str, x: np.ndarray) -> bytes:
    fn = getattr(lib, "quantize_row_" + qtype.lower().replace("_k", "_K") + "_ref")
    out = ctypes.create_string_buffer(len(x) // BLOCK[qtype] * TYPE_SIZE[qtype])
    xs = np.ascontiguousarray(x, dtype=np.float32)
    fn(xs.ctypes.data_as(ctypes.c_void_p), out, ctypes.c_int64(len(x)))
    return out.raw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ggml-src", help="llama.cpp's ggml/ directory: cross-check against ggml's C reference")
    ap.add_argument("--out", default=OUT_DIR)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lib = None
    tmp = tempfile.TemporaryDirectory()
    if args.ggml_src:
        lib = build_ggml(args.ggml_src, tmp.name)
    for idx, qtype in enumerate(TYPES):
        rng = np.random.default_rng(20240620 + idx)
        x = make_input(qtype, rng)
        want = expected_bytes(qtype, x)
        assert len(want) == len(x) // BLOCK[qtype] * TYPE_SIZE[qtype], qtype
        note = ""
        if lib is not None:
            got = ggml_quantize(lib, qtype, x)
            if qtype == "Q8_K":  # bsums of an all-zero block are left unset by ggml
                got = bytearray(got)
                for b in range(len(x) // 256):
                    if not np.any(x[256 * b:256 * b + 256]):
                        got[292 * b:292 * b + 292] = bytes(292)
                got = bytes(got)
            if got != want:
                bad = next(i for i in range(len(got)) if got[i] != want[i])
                print(f"{qtype}: MISMATCH with ggml's C reference at byte {bad} (block {bad // TYPE_SIZE[qtype]})")
                return 1
            note = ", identical to ggml's C quantize_row_ref"
        with open(os.path.join(args.out, qtype + ".f32"), "wb") as f:
            f.write(x.astype("<f4").tobytes())
        with open(os.path.join(args.out, qtype + ".bin"), "wb") as f:
            f.write(want)
        deq = gguf_dequant(qtype, want)
        if deq is not None:
            with open(os.path.join(args.out, qtype + ".deq.f32"), "wb") as f:
                f.write(deq.astype("<f4").tobytes())
        src = "gguf.quants" if qtype not in OURS else "numpy port"
        print(f"{qtype}: {len(x)} values -> {len(want)} bytes ({src}{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
