"""The C library's requantization equals, bit for bit, the 64-bit form it replaced.

``edgeopt_requantize`` was rewritten in 32-bit operations (a variable 64-bit shift is a libgcc
call on Cortex-M). The 64-bit form below is kept as the oracle: it rounds float(acc) and the
product to 24 significant bits and the quotient to an integer, each with ties to even, as
ONNX Runtime's float32 requantization does (the host parity tests hold it at 0 LSB). A C driver
compiled with the host gcc compares both on edge cases (0, +-1, INT32_MIN/MAX, powers of two,
forced ties) and a few million seeded random (acc, multiplier, shift) triples over the whole
domain (multiplier in [0, 2^31), shift in [1, 63]), and the clamp to int8 after it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import edgeopt.export.c
from edgeopt.export.c.check import STRICT_FLAGS

KERNELS = Path(edgeopt.export.c.__file__).parent

ORACLE = r"""
#include "edgeopt_kernels.c"

static uint64_t old_round_shift_unsigned(uint64_t magnitude, int32_t shift)
{
    const uint64_t half = (uint64_t)1 << (shift - 1);
    const uint64_t remainder = magnitude & ((half << 1) - 1u);
    uint64_t quotient = magnitude >> shift;
    if (remainder > half || (remainder == half && (quotient & 1u) != 0u)) {
        quotient += 1u;
    }
    return quotient;
}

static uint64_t old_float_bits(uint64_t magnitude)
{
    const int32_t extra = (magnitude == 0u ? 0 : 64 - __builtin_clzll(magnitude)) - 24;
    if (extra <= 0) {
        return magnitude;
    }
    return old_round_shift_unsigned(magnitude, extra) << extra;
}

static int32_t old_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    const uint64_t magnitude = acc < 0 ? (uint64_t)0 - (uint64_t)(int64_t)acc : (uint64_t)acc;
    const uint64_t product = old_float_bits(old_float_bits(magnitude) * (uint64_t)multiplier);
    const uint64_t value = old_round_shift_unsigned(product, shift);
    if (value > (uint64_t)INT32_MAX) {
        return acc < 0 ? INT32_MIN : INT32_MAX;
    }
    return acc < 0 ? -(int32_t)value : (int32_t)value;
}

static int8_t old_output(int32_t acc, int32_t multiplier, int32_t shift, int32_t zero_point,
                         int32_t low, int32_t high)
{
    return edgeopt_clamp((int64_t)old_requantize(acc, multiplier, shift) + zero_point, low,
                         high);
}

#include <stdio.h>

static uint64_t state = 0x9E3779B97F4A7C15u;

static uint32_t next(void) /* xorshift64* */
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t)((state * 0x2545F4914F6CDD1Du) >> 32);
}

static long checked, failed;

static void check(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t zero_point = (int32_t)(next() % 256u) - 128;
    const int32_t low = (next() & 1u) ? -128 : zero_point;
    const int32_t expected = old_requantize(acc, multiplier, shift);
    const int32_t got = edgeopt_requantize(acc, multiplier, shift);
    checked += 1;
    if (expected != got ||
        old_output(acc, multiplier, shift, zero_point, low, 127) !=
            edgeopt_output(acc, multiplier, shift, zero_point, low, 127)) {
        if (failed < 10) {
            printf("acc %ld multiplier %ld shift %ld: %ld != %ld\n", (long)acc,
                   (long)multiplier, (long)shift, (long)expected, (long)got);
        }
        failed += 1;
    }
}

static int32_t signed_of(uint32_t value)
{
    return value <= (uint32_t)INT32_MAX ? (int32_t)value : -(int32_t)(~value) - 1;
}

int main(void)
{
    static const int32_t accs[] = {0, 1, -1, 2, -2, 3, 127, -128, 0xFFFFFF, -0xFFFFFF,
                                   0x1000000, -0x1000000, 0x1000001, 0x1000003, -0x1000003,
                                   0x7FFFFFFF, -0x7FFFFFFF, -0x7FFFFFFF - 1, 0x7FFFFF80,
                                   0x7FFFFFC0, -0x7FFFFFC0};
    static const int32_t multipliers[] = {0, 1, 2, 3, 0x40000000, 0x7FFFFFFF, 0x7FFFFF80,
                                          0x55555500, 0x40000080, 0x00FFFFFF, 0x01000001};
    long round, i, j, k;
    for (i = 0; i < (long)(sizeof accs / sizeof accs[0]); ++i) {
        for (j = 0; j < (long)(sizeof multipliers / sizeof multipliers[0]); ++j) {
            for (k = 1; k <= 63; ++k) {
                check(accs[i], multipliers[j], (int32_t)k);
            }
        }
    }
    for (round = 0; round < ROUNDS; ++round) {
        const uint32_t bits = next();
        const int32_t width = (int32_t)(next() % 32u);        /* |acc| < 2^width, often small */
        const uint32_t mask = width == 0 ? 0u : 0xFFFFFFFFu >> (32 - width);
        int32_t acc = signed_of(bits);
        int32_t multiplier = (int32_t)(0x40000000u | (next() & 0x3FFFFF80u)); /* a float32 */
        int32_t shift = 1 + (int32_t)(next() % 63u);
        switch (round % 6) {
        case 0: /* the layers' domain: a float32 multiplier, shifts around 31..46 */
            acc = (bits & 0x80000000u) ? -(int32_t)(bits & mask) : (int32_t)(bits & mask);
            shift = 31 + (int32_t)(next() % 16u);
            break;
        case 1: /* any multiplier of 31 bits */
            multiplier = (int32_t)(next() >> 1);
            break;
        case 2: /* small accumulators, any multiplier, any shift */
            acc = (bits & 0x80000000u) ? -(int32_t)(bits & mask) : (int32_t)(bits & mask);
            multiplier = (int32_t)((next() >> 1) >> (next() % 31u));
            break;
        case 3: /* a tie: the product's bits below the shift are exactly one half */
            multiplier = 1 << (next() % 31u);
            acc = (int32_t)(((bits & mask) | 1u) << (next() % 8u)) * ((bits & 1u) ? -1 : 1);
            shift = 1 + (int32_t)(next() % 40u);
            break;
        case 4: /* a tie of the 24-bit rounding: 25 or more significant bits ending in 1 */
            acc = signed_of((bits | 0x01000000u | 1u) & (0x7FFFFFFFu >> (next() % 7u)));
            multiplier = (int32_t)(1u << (next() % 31u));
            break;
        default: /* the full domain */
            break;
        }
        check(acc, multiplier, shift);
    }
    printf("checked %ld failed %ld\n", checked, failed);
    return failed != 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (apt-get install gcc)")
def test_requantize_equals_the_64_bit_form_on_millions_of_inputs(tmp_path: Path) -> None:
    source = tmp_path / "requantize.c"
    source.write_text(ORACLE)
    binary = tmp_path / "requantize"
    flags = [*STRICT_FLAGS, "-Wno-unused-function", "-DROUNDS=3000000L"]
    subprocess.run(["gcc", *flags, f"-I{KERNELS}", str(source), "-o", str(binary)], check=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert "failed 0" in result.stdout and "checked 3014553" in result.stdout, result.stdout
