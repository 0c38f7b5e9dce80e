"""The fast convolution, dot-product and pooling kernels compute the bits the old loops computed.

``edgeopt_conv2d``, ``edgeopt_depthwise_conv2d`` and ``edgeopt_max_pool2d`` split windows into
interior ones (no bounds checks; for the convolutions the input zero point folded into the bias)
and border ones (their valid rectangle); ``edgeopt_pointwise_conv2d``, strided 1x1 convolutions
and the fully connected dot product use Arm's DSP extension where the compiler has it. The
straightforward loops they replaced are kept below as the oracle. A C driver compares both on
tens of thousands of seeded random layers (general, grouped, depthwise and pointwise
convolutions with strides, dilations, asymmetric padding, windows wholly in the padding, strided
1x1 shortcuts, kernels of over 64 taps, accumulators that wrap, no bias; fully connected rows of
any length and alignment; max pools with padding and a requantization table), built with the
host gcc and, when the emulator's tools are installed, for the Cortex-M4, M7, M33 and M55
(``arm-none-eabi-gcc -O2``, the DSP path) and run on QEMU's MPS2 boards and the MPS3 AN547.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import edgeopt.export.c
from edgeopt.export.c.check import CORTEX_M4_FLAGS
from edgeopt.export.c.check import STRICT_FLAGS
from edgeopt.measure.cortexm import CORES
from edgeopt.measure.cortexm import has_cortexm_tools

KERNELS = Path(edgeopt.export.c.__file__).parent

DRIVER = r"""
#include "edgeopt_kernels.c"

void old_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t group_in = p->in_channels / p->groups;
    const int32_t group_out = p->out_channels / p->groups;
    const int32_t plane = p->in_height * p->in_width;
    const int32_t taps = p->kernel_height * p->kernel_width;
    int32_t oc, oy, ox, ic, ky, kx;
    for (oc = 0; oc < p->out_channels; ++oc) {
        const int8_t *w = p->weights + oc * group_in * taps;
        const int8_t *x = in + (oc / group_out) * group_in * plane;
        const uint32_t bias = p->bias != NULL ? (uint32_t)p->bias[oc] : 0u;
        for (oy = 0; oy < p->out_height; ++oy) {
            const int32_t y0 = oy * p->stride_height - p->pad_top;
            for (ox = 0; ox < p->out_width; ++ox) {
                const int32_t x0 = ox * p->stride_width - p->pad_left;
                uint32_t acc = bias;
                for (ic = 0; ic < group_in; ++ic) {
                    const int8_t *xc = x + ic * plane;
                    const int8_t *wc = w + ic * taps;
                    for (ky = 0; ky < p->kernel_height; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_height;
                        if (iy < 0 || iy >= p->in_height) {
                            continue;
                        }
                        for (kx = 0; kx < p->kernel_width; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_width;
                            if (ix < 0 || ix >= p->in_width) {
                                continue;
                            }
                            acc += (uint32_t)(((int32_t)xc[iy * p->in_width + ix] -
                                               p->in_zero_point) *
                                              (int32_t)wc[ky * p->kernel_width + kx]);
                        }
                    }
                }
                *out++ = edgeopt_output(edgeopt_signed(acc), p->multiplier[oc], p->shift[oc],
                                        p->out_zero_point, p->act_min, p->act_max);
            }
        }
    }
}

void old_depthwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t depth_multiplier = p->out_channels / p->in_channels;
    const int32_t plane = p->in_height * p->in_width;
    const int32_t taps = p->kernel_height * p->kernel_width;
    int32_t oc, oy, ox, ky, kx;
    for (oc = 0; oc < p->out_channels; ++oc) {
        const int8_t *w = p->weights + oc * taps;
        const int8_t *x = in + (oc / depth_multiplier) * plane;
        const uint32_t bias = p->bias != NULL ? (uint32_t)p->bias[oc] : 0u;
        for (oy = 0; oy < p->out_height; ++oy) {
            const int32_t y0 = oy * p->stride_height - p->pad_top;
            for (ox = 0; ox < p->out_width; ++ox) {
                const int32_t x0 = ox * p->stride_width - p->pad_left;
                uint32_t acc = bias;
                for (ky = 0; ky < p->kernel_height; ++ky) {
                    const int32_t iy = y0 + ky * p->dilation_height;
                    if (iy < 0 || iy >= p->in_height) {
                        continue;
                    }
                    for (kx = 0; kx < p->kernel_width; ++kx) {
                        const int32_t ix = x0 + kx * p->dilation_width;
                        if (ix < 0 || ix >= p->in_width) {
                            continue;
                        }
                        acc += (uint32_t)(((int32_t)x[iy * p->in_width + ix] -
                                           p->in_zero_point) *
                                          (int32_t)w[ky * p->kernel_width + kx]);
                    }
                }
                *out++ = edgeopt_output(edgeopt_signed(acc), p->multiplier[oc], p->shift[oc],
                                        p->out_zero_point, p->act_min, p->act_max);
            }
        }
    }
}

void old_pointwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width;
    int32_t oc, pixel, ic;
    for (oc = 0; oc < p->out_channels; ++oc) {
        const int8_t *w = p->weights + oc * p->in_channels;
        for (pixel = 0; pixel < plane; ++pixel) {
            const int8_t *x = in + pixel;
            uint32_t acc = (uint32_t)p->bias[oc];
            for (ic = 0; ic < p->in_channels; ++ic) {
                acc += (uint32_t)((int32_t)x[ic * plane] * (int32_t)w[ic]);
            }
            *out++ = edgeopt_output(edgeopt_signed(acc), p->multiplier[oc], p->shift[oc],
                                    p->out_zero_point, p->act_min, p->act_max);
        }
    }
}

static int32_t old_dot(const edgeopt_fc_params *p, const int8_t *in, int32_t o)
{
    const int8_t *w = p->weights + o * p->in_features;
    uint32_t acc = (uint32_t)p->bias[o];
    int32_t i;
    for (i = 0; i < p->in_features; ++i) {
        acc += (uint32_t)((int32_t)in[i] * (int32_t)w[i]);
    }
    return edgeopt_signed(acc);
}

void old_max_pool2d(const edgeopt_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width;
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->channels; ++c) {
        const int8_t *x = in + c * plane;
        for (oy = 0; oy < p->out_height; ++oy) {
            const int32_t y0 = oy * p->stride_height - p->pad_top;
            for (ox = 0; ox < p->out_width; ++ox) {
                const int32_t x0 = ox * p->stride_width - p->pad_left;
                int32_t best = -128;
                for (ky = 0; ky < p->kernel_height; ++ky) {
                    const int32_t iy = y0 + ky;
                    if (iy < 0 || iy >= p->in_height) {
                        continue;
                    }
                    for (kx = 0; kx < p->kernel_width; ++kx) {
                        const int32_t ix = x0 + kx;
                        if (ix >= 0 && ix < p->in_width && x[iy * p->in_width + ix] > best) {
                            best = x[iy * p->in_width + ix];
                        }
                    }
                }
                *out++ = p->table != NULL ? p->table[best + 128] : (int8_t)best;
            }
        }
    }
}

#ifdef EDGEOPT_BARE /* QEMU mps2-an386: Arm semihosting for the report and the exit */
static uint32_t semihost(uint32_t operation, const void *argument)
{
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void report(long checked, long failed)
{
    char text[64];
    char *end = text + sizeof text;
    long values[2];
    int k;
    values[0] = failed;
    values[1] = checked;
    *--end = '\0';
    *--end = '\n';
    for (k = 0; k < 2; ++k) {
        long v = values[k];
        do {
            *--end = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        end -= 8;
        memcpy(end, k == 0 ? " failed " : "checked ", 8);
    }
    (void)semihost(0x04u, end);
}
#else
#include <stdio.h>
static void report(long checked, long failed)
{
    printf("checked %ld failed %ld\n", checked, failed);
}
#endif

static uint64_t state = 0x9E3779B97F4A7C15u;

static uint32_t next(void) /* xorshift64* */
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (uint32_t)((state * 0x2545F4914F6CDD1Du) >> 32);
}

static int32_t pick(int32_t low, int32_t high)
{
    return low + (int32_t)(next() % (uint32_t)(high - low + 1));
}

static int8_t input[4096], weights[4096], expected[4096], got[4096];
static int32_t bias[64], multiplier[64], shift[64];

static void fill(int8_t *values, int32_t size)
{
    const int32_t extreme = next() % 4u == 0u; /* all +-127/-128: the largest sums */
    int32_t i;
    for (i = 0; i < size; ++i) {
        values[i] = extreme ? (int8_t)((next() & 1u) ? 127 : -128) : (int8_t)(next() & 0xFFu);
    }
}

static void channel_params(int32_t channels)
{
    int32_t c;
    for (c = 0; c < channels; ++c) {
        const uint32_t kind = next() % 4u;
        bias[c] = kind == 0u ? (int32_t)next() : pick(-20000, 20000);
        if (kind == 1u) { /* near the int32 limits: the accumulator wraps */
            bias[c] = (next() & 1u) ? INT32_MAX - pick(0, 300) : INT32_MIN + pick(0, 300);
        }
        multiplier[c] = (int32_t)(0x40000000u | (next() & 0x3FFFFF80u));
        shift[c] = pick(31, 46);
    }
}

static int32_t conv_trial(int32_t kind)
{
    edgeopt_conv_params p;
    int32_t pad_bottom, pad_right;
    memset(&p, 0, sizeof p);
    p.in_channels = pick(1, 6);
    p.in_height = pick(1, 9);
    p.in_width = pick(1, 9);
    p.kernel_height = pick(1, 5);
    p.kernel_width = pick(1, 5);
    p.stride_height = pick(1, 3);
    p.stride_width = pick(1, 3);
    p.dilation_height = next() % 3u == 0u ? 2 : 1;
    p.dilation_width = next() % 3u == 0u ? 2 : 1;
    p.pad_top = pick(0, 3);
    p.pad_left = pick(0, 3);
    pad_bottom = pick(0, 3);
    pad_right = pick(0, 3);
    p.groups = 1;
    p.out_channels = pick(1, 6);
    if (kind == 1) { /* depthwise, half of them 3x3 */
        p.groups = p.in_channels;
        p.out_channels = p.in_channels * pick(1, 2);
        if (next() & 1u) {
            p.kernel_height = p.kernel_width = 3;
            p.dilation_height = p.dilation_width = 1;
        }
    } else if (kind == 0 && (next() & 1u)) {
        p.kernel_height = p.kernel_width = 3;
    } else if (kind == 0 && (next() & 1u)) { /* 1x1 without padding (strided shortcuts) */
        p.kernel_height = p.kernel_width = 1;
        p.pad_top = p.pad_left = pad_bottom = pad_right = 0;
        p.in_width = pick(1, 24);
        p.in_channels = pick(1, 20);
    } else if (kind == 2) { /* pointwise: 1x1, stride 1, no padding, zero point in the bias */
        p.kernel_height = p.kernel_width = 1;
        p.stride_height = p.stride_width = p.dilation_height = p.dilation_width = 1;
        p.pad_top = p.pad_left = pad_bottom = pad_right = 0;
        p.in_channels = pick(1, 40);
    } else if (kind == 3 && (next() & 1u)) { /* grouped */
        p.groups = 2;
        p.in_channels = 2 * pick(1, 3);
        p.out_channels = 2 * pick(1, 3);
    } else if (kind == 3) { /* over 64 taps: no per-tap weight sums */
        p.kernel_height = pick(7, 9);
        p.kernel_width = pick(8, 9);
        p.in_height = pick(1, 12);
        p.in_width = pick(1, 12);
        p.pad_top = pick(0, 8);
        p.pad_left = pick(0, 8);
        pad_bottom = pick(0, 8);
        pad_right = pick(0, 8);
    }
    if (p.in_height + p.pad_top + pad_bottom < p.dilation_height * (p.kernel_height - 1) + 1 ||
        p.in_width + p.pad_left + pad_right < p.dilation_width * (p.kernel_width - 1) + 1) {
        return 0;
    }
    p.out_height = (p.in_height + p.pad_top + pad_bottom -
                    p.dilation_height * (p.kernel_height - 1) - 1) / p.stride_height + 1;
    p.out_width = (p.in_width + p.pad_left + pad_right -
                   p.dilation_width * (p.kernel_width - 1) - 1) / p.stride_width + 1;
    p.in_zero_point = kind == 2 ? 0 : pick(-128, 127);
    p.out_zero_point = pick(-128, 127);
    p.act_min = (next() & 1u) ? -128 : p.out_zero_point;
    p.act_max = 127;
    fill(input, p.in_channels * p.in_height * p.in_width);
    fill(weights,
         p.out_channels * (p.in_channels / p.groups) * p.kernel_height * p.kernel_width);
    channel_params(p.out_channels);
    p.weights = weights;
    p.bias = (kind != 2 && next() % 5u == 0u) ? NULL : bias;
    p.multiplier = multiplier;
    p.shift = shift;
    memset(expected, 0x55, sizeof expected);
    memset(got, 0x55, sizeof got);
    if (kind == 1) {
        old_depthwise_conv2d(&p, input, expected);
        edgeopt_depthwise_conv2d(&p, input, got);
    } else if (kind == 2) {
        old_pointwise_conv2d(&p, input, expected);
        edgeopt_pointwise_conv2d(&p, input, got);
    } else {
        old_conv2d(&p, input, expected);
        edgeopt_conv2d(&p, input, got);
    }
    return memcmp(expected, got, sizeof got) == 0 ? 1 : -1;
}

static int32_t fc_trial(void)
{
    edgeopt_fc_params f;
    int32_t o;
    memset(&f, 0, sizeof f);
    f.in_features = pick(1, 70);
    f.out_features = pick(1, 8);
    fill(input, f.in_features + 3);
    fill(weights, f.in_features * f.out_features + 3);
    channel_params(f.out_features);
    f.weights = weights + next() % 4u; /* any alignment */
    f.bias = bias;
    for (o = 0; o < f.out_features; ++o) {
        const int8_t *x = input + o % 4;
        if (old_dot(&f, x, o) != edgeopt_dot(&f, x, o)) {
            return -1;
        }
    }
    return 1;
}

static int32_t pool_trial(void)
{
    edgeopt_pool_params q;
    static int8_t table[256];
    int32_t pad_bottom, pad_right, i;
    memset(&q, 0, sizeof q);
    q.channels = pick(1, 6);
    q.in_height = pick(1, 12);
    q.in_width = pick(1, 12);
    q.kernel_height = pick(1, 4);
    q.kernel_width = pick(1, 4);
    if (next() & 1u) {
        q.kernel_height = q.kernel_width = q.stride_height = q.stride_width = 2;
    } else {
        q.stride_height = pick(1, 3);
        q.stride_width = pick(1, 3);
    }
    q.pad_top = pick(0, q.kernel_height - 1);
    q.pad_left = pick(0, q.kernel_width - 1);
    pad_bottom = pick(0, q.kernel_height - 1);
    pad_right = pick(0, q.kernel_width - 1);
    if (q.in_height + q.pad_top + pad_bottom < q.kernel_height ||
        q.in_width + q.pad_left + pad_right < q.kernel_width) {
        return 0;
    }
    q.out_height = (q.in_height + q.pad_top + pad_bottom - q.kernel_height) / q.stride_height + 1;
    q.out_width = (q.in_width + q.pad_left + pad_right - q.kernel_width) / q.stride_width + 1;
    for (i = 0; i < 256; ++i) {
        table[i] = (int8_t)(next() & 0xFFu);
    }
    q.table = (next() & 1u) ? table : NULL;
    fill(input, q.channels * q.in_height * q.in_width);
    memset(expected, 0x55, sizeof expected);
    memset(got, 0x55, sizeof got);
    old_max_pool2d(&q, input, expected);
    edgeopt_max_pool2d(&q, input, got);
    return memcmp(expected, got, sizeof got) == 0 ? 1 : -1;
}

int main(void)
{
    long trial, checked = 0, failed = 0;
    for (trial = 0; trial < TRIALS; ++trial) {
        const int32_t kind = (int32_t)(trial % 6);
        const int32_t result = kind == 5 ? pool_trial() : kind == 4 ? fc_trial() : conv_trial(kind);
        checked += result != 0;
        failed += result < 0;
    }
    report(checked, failed);
    return failed != 0;
}

#ifdef EDGEOPT_BARE
extern uint32_t edgeopt_bss_start, edgeopt_bss_end;
void edgeopt_reset(void);

void edgeopt_reset(void)
{
    uint32_t *word;
    for (word = &edgeopt_bss_start; word < &edgeopt_bss_end; word++) {
        *word = 0u;
    }
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* the FPU */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    (void)semihost(0x18u, (const void *)(uintptr_t)(main() == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[1])(void) = {
    edgeopt_reset};
#endif
"""

TRIALS = 30000


def _checked(stdout: str) -> tuple[int, int]:
    words = stdout.split()
    return int(words[words.index("checked") + 1]), int(words[words.index("failed") + 1])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (apt-get install gcc)")
def test_fast_kernels_equal_the_reference_loops_on_random_layers(tmp_path: Path) -> None:
    source = tmp_path / "kernels.c"
    source.write_text(DRIVER)
    binary = tmp_path / "kernels"
    flags = [*STRICT_FLAGS, "-Wno-unused-function", f"-DTRIALS={TRIALS}L"]
    subprocess.run(["gcc", *flags, f"-I{KERNELS}", str(source), "-o", str(binary)], check=True)
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    checked, failed = _checked(done.stdout)
    assert (failed, done.returncode) == (0, 0), done.stdout
    assert checked > TRIALS * 0.8


@pytest.mark.skipif(not has_cortexm_tools(), reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("name", list(CORES))
def test_fast_kernels_equal_the_reference_loops_on_emulated_cortex_m_cores(
    name: str, tmp_path: Path
) -> None:
    from edgeopt.measure._cortexm_image import _linker_script

    core = CORES[name]
    (tmp_path / "kernels.c").write_text(DRIVER)
    (tmp_path / "image.ld").write_text(_linker_script(core))
    assert name != "cortex-m4" or tuple(core.flags) == CORTEX_M4_FLAGS
    subprocess.run(
        [
            "arm-none-eabi-gcc", *STRICT_FLAGS, *core.flags, "-Wno-unused-function",
            "-DEDGEOPT_BARE", "-DTRIALS=6000L", f"-I{KERNELS}", "-nostartfiles",
            "--specs=nosys.specs", "-T", "image.ld", "kernels.c", "-o", "image.elf",
        ],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    done = subprocess.run(
        [
            "qemu-system-arm", "-M", core.machine, "-nographic", "-monitor", "none",
            "-serial", "none", "-chardev", "file,id=out,path=out.txt",
            "-semihosting-config", "enable=on,target=native,chardev=out",
            "-kernel", "image.elf",
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    text = (tmp_path / "out.txt").read_text()
    checked, failed = _checked(text)
    assert (failed, done.returncode) == (0, 0), text + done.stderr
    assert checked > 6000 * 0.8
