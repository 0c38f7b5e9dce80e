/* edgeopt int8 kernels: portable C99, with Arm DSP-extension paths (see edgeopt_kernels.h). */
#include "edgeopt_kernels.h"

#include <stddef.h>
#include <string.h>

/* Arm's DSP extension (Cortex-M4, M7, M33, M55 ...): 16-bit multiply-accumulates on halves of a
 * register (SMLABB, SMLATB, SMLAD) and SXTB16, which sign-extends bytes 0 and 2 of a word into
 * its two halves, the way Arm's CMSIS-NN int8 kernels read four int8 values with one load
 * (arm_nn_read_s8x4 and read_and_pad, https://github.com/ARM-software/CMSIS-NN); intrinsics from
 * ACLE (Arm C Language Extensions, https://github.com/ARM-software/acle: the "32-bit SIMD
 * intrinsics" __sxtb16 and __smlad, the "accumulating multiplications" __smlabb and __smlatb,
 * <arm_acle.h>). Products of int8 values are exact in
 * 16 x 16 bits and the accumulate wraps modulo 2^32 as the portable uint32 accumulators do (on
 * overflow it only sets the Q flag), so both paths compute the same bits. Little-endian only:
 * the pixel each half holds follows the byte order. */
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && !defined(__ARM_BIG_ENDIAN)
#include <arm_acle.h>
#define EDGEOPT_ARM_DSP 1
#else
#define EDGEOPT_ARM_DSP 0
#endif

/* round(magnitude / 2^shift), ties to even, for shift in [1, 63]. */
static uint64_t edgeopt_round_shift_unsigned(uint64_t magnitude, int32_t shift)
{
    const uint64_t half = (uint64_t)1 << (shift - 1);
    const uint64_t remainder = magnitude & ((half << 1) - 1u);
    uint64_t quotient = magnitude >> shift;
    if (remainder > half || (remainder == half && (quotient & 1u) != 0u)) {
        quotient += 1u;
    }
    return quotient;
}

/* round(value / 2^shift), ties to even, for shift in [1, 62]; portable for negative values
 * (C99 leaves the right shift of a negative number to the implementation). */
static int64_t edgeopt_round_shift(int64_t value, int32_t shift)
{
    const uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    const uint64_t quotient = edgeopt_round_shift_unsigned(magnitude, shift);
    return value < 0 ? -(int64_t)quotient : (int64_t)quotient;
}

static int32_t edgeopt_bit_length(uint64_t value)
{
#if defined(__GNUC__) || defined(__clang__)
    return value == 0u ? 0 : 64 - __builtin_clzll(value);
#else
    int32_t bits = 0;
    while (value >= 65536u) {
        value >>= 16;
        bits += 16;
    }
    while (value != 0u) {
        value >>= 1;
        bits += 1;
    }
    return bits;
#endif
}

/* The value a float32 holds for magnitude: 24 significant bits, ties to even. */
static uint64_t edgeopt_float_bits(uint64_t magnitude)
{
    const int32_t extra = edgeopt_bit_length(magnitude) - 24;
    if (extra <= 0) {
        return magnitude;
    }
    return edgeopt_round_shift_unsigned(magnitude, extra) << extra;
}

/* Accumulators add modulo 2^32 in unsigned arithmetic, as ONNX Runtime's int32 kernels wrap
 * (a bias saturated at the int32 limit can pass it); C's signed overflow would be undefined. */
static int32_t edgeopt_signed(uint32_t value)
{
    return value <= (uint32_t)INT32_MAX ? (int32_t)value : -(int32_t)(~value) - 1;
}

static int8_t edgeopt_clamp(int64_t value, int32_t low, int32_t high)
{
    if (value < low) {
        return (int8_t)low;
    }
    if (value > high) {
        return (int8_t)high;
    }
    return (int8_t)value;
}

/* Round to the nearest integer, ties to even (ONNX QuantizeLinear), without libm. */
static int32_t edgeopt_round_float(float value)
{
    int32_t whole;
    float fraction;
    if (!(value == value)) {
        return 0; /* NaN */
    }
    if (value > 1.0e9f) {
        return 1000000000;
    }
    if (value < -1.0e9f) {
        return -1000000000;
    }
    whole = (int32_t)value; /* toward zero */
    fraction = value - (float)whole;
    if (fraction > 0.5f || (fraction == 0.5f && (whole & 1) != 0)) {
        whole += 1;
    } else if (fraction < -0.5f || (fraction == -0.5f && (whole & 1) != 0)) {
        whole -= 1;
    }
    return whole;
}

static int32_t edgeopt_clz32(uint32_t value)
{
#if defined(__GNUC__) || defined(__clang__)
    return value == 0u ? 32 : __builtin_clz(value);
#else
    int32_t zeros = 0;
    if (value == 0u) {
        return 32;
    }
    while ((value & 0x80000000u) == 0u) {
        value <<= 1;
        zeros += 1;
    }
    return zeros;
#endif
}

/* round(acc * multiplier / 2^shift) with the product rounded as float32 arithmetic rounds
 * float(acc) * scale (24 significant bits, ties to even) before rounding to an integer (ties
 * to even): the integer form of ONNX Runtime's requantization, so results match it exactly.
 * The multiplier of a float32 scale has 24 significant bits, so it is exact. Defined for
 * multiplier in [0, 2^31) and shift in [1, 63].
 *
 * Written in 32-bit operations for cores without a 64-bit shifter (Cortex-M: a variable 64-bit
 * shift is a libgcc call): one 32x32->64 multiply (UMULL), then the product is normalized so
 * its top 32 bits hold the 24 significant bits, the rounding byte below them and, in the rest,
 * a sticky bit; the rounded significand s (2^23 <= s <= 2^24) times 2^(bits - 24) is the float
 * product, shifted right by `shift` with ties to even. tests/export/test_c_requantize.py checks
 * it against the 64-bit form it replaced on millions of inputs. */
int32_t edgeopt_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    uint32_t magnitude = acc < 0 ? 0u - (uint32_t)acc : (uint32_t)acc;
    uint64_t product;
    uint32_t high, low, top, rest, significand, value;
    int32_t zeros, bits, right;
    if (magnitude >= 0x1000000u) { /* float(acc): round to 24 significant bits, ties to even */
        const int32_t extra = 8 - edgeopt_clz32(magnitude);
        const uint32_t half = 1u << (extra - 1);
        const uint32_t remainder = magnitude & ((half << 1) - 1u);
        uint32_t quotient = magnitude >> extra;
        if (remainder > half || (remainder == half && (quotient & 1u) != 0u)) {
            quotient += 1u;
        }
        magnitude = quotient << extra; /* at most 2^31 */
    }
    product = (uint64_t)magnitude * (uint32_t)multiplier;
    high = (uint32_t)(product >> 32);
    low = (uint32_t)product;
    if (high != 0u) {
        zeros = edgeopt_clz32(high);
        bits = 64 - zeros;
        top = zeros == 0 ? high : (high << zeros) | (low >> (32 - zeros));
        rest = low << zeros;
    } else if (low != 0u) {
        zeros = edgeopt_clz32(low);
        bits = 32 - zeros;
        top = low << zeros;
        rest = 0u;
    } else {
        return 0;
    }
    /* float(product): the top 24 bits, rounded by the byte below them, ties to even */
    significand = top >> 8;
    if ((top & 0xFFu) > 0x80u ||
        ((top & 0xFFu) == 0x80u && (rest != 0u || (significand & 1u) != 0u))) {
        significand += 1u;
    }
    right = shift + 24 - bits; /* product = significand * 2^(bits - 24) */
    if (right <= 0) {
        if (right <= -8 || (significand << -right) > (uint32_t)INT32_MAX) {
            return acc < 0 ? INT32_MIN : INT32_MAX;
        }
        value = significand << -right;
    } else if (right >= 26) {
        return 0; /* significand / 2^right <= 2^-2 */
    } else {
        const uint32_t half = 1u << (right - 1);
        const uint32_t remainder = significand & ((half << 1) - 1u);
        value = significand >> right;
        if (remainder > half || (remainder == half && (value & 1u) != 0u)) {
            value += 1u;
        }
    }
    return acc < 0 ? -(int32_t)value : (int32_t)value;
}

/* Requantize, add the zero point and clamp; the bounds move instead of the value, so the
 * sum needs no 64-bit arithmetic (a saturated value plus the zero point would pass int32). */
static int8_t edgeopt_output(int32_t acc, int32_t multiplier, int32_t shift, int32_t zero_point,
                             int32_t low, int32_t high)
{
    const int32_t value = edgeopt_requantize(acc, multiplier, shift);
    if (value < low - zero_point) {
        return (int8_t)low;
    }
    if (value > high - zero_point) {
        return (int8_t)high;
    }
    return (int8_t)(value + zero_point);
}

#if EDGEOPT_ARM_DSP
/* Four int8 values from any address: memcpy keeps it free of aliasing and alignment
 * assumptions, and gcc makes it one LDR (these cores load unaligned words). */
static uint32_t edgeopt_load4(const int8_t *x)
{
    uint32_t word;
    memcpy(&word, x, sizeof word);
    return word;
}

/* Bytes 1 and 3 of a word sign-extended into its halves: SXTB16 of the word rotated by 8, one
 * instruction (ACLE has no rotating form and gcc does not fuse the rotation: written in
 * assembly as CMSIS-Core's __SXTB16_RORn writes it). */
static int32_t edgeopt_odd_bytes(uint32_t word)
{
#if defined(__GNUC__)
    int32_t halves;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(halves) : "r"(word));
    return halves;
#else
    return __sxtb16((word >> 8) | (word << 24));
#endif
}
#endif

/* The taps [*first, *last) of a window starting at `start` with tap spacing `step` that land
 * inside [0, size): the valid taps of a row (or column) of a window are contiguous, so a window
 * at the border is a smaller rectangle and no tap needs a bounds check. */
static void edgeopt_valid_taps(int32_t start, int32_t step, int32_t taps, int32_t size,
                               int32_t *first, int32_t *last)
{
    int32_t low, high;
    if (step == 1) { /* no dilation: no division */
        low = start < 0 ? -start : 0;
        high = size - start <= 0 ? 0 : size - start;
    } else {
        low = start < 0 ? (step - 1 - start) / step : 0;
        high = size - start <= 0 ? 0 : (size - start + step - 1) / step;
    }
    if (high > taps) {
        high = taps;
    }
    if (low > high) {
        low = high;
    }
    *first = low;
    *last = high;
}

/* One convolution window, the geometry of its channel planes and kernel rows. */
typedef struct {
    int32_t channels;      /* input channels of the window (1: depthwise) */
    int32_t plane;         /* input values per channel */
    int32_t taps;          /* weights per channel */
    int32_t rows, cols;    /* valid kernel rows and columns */
    int32_t row_step;      /* input values between the window's rows: dilation * width */
    int32_t col_step;      /* input values between its columns: the dilation */
    int32_t kernel_width;  /* weights between its rows */
} edgeopt_window;

/* The product of tap i of a kernel row, and a loop over a window's channels and valid rows that
 * adds one row expression (of xr, wr) per row: at most 8 int8 products, exact in int32. */
#define EDGEOPT_TAP(i) ((int32_t)xr[i] * (int32_t)wr[i])
#define EDGEOPT_ROWS(row_sum)                                                                    \
    for (c = 0; c < channels; ++c) {                                                             \
        const int8_t *xr = x + c * plane;                                                        \
        const int8_t *wr = w + c * taps;                                                         \
        for (r = 0; r < rows; ++r) {                                                             \
            acc += (uint32_t)(row_sum);                                                          \
            xr += row_step;                                                                      \
            wr += kernel_width;                                                                  \
        }                                                                                        \
    }

/* Tap (r, k) of a window's rectangle, and a loop over its channels adding one expression of
 * them per channel. */
#define EDGEOPT_AT(r, k) ((int32_t)x[(r) * row_step + (k)] * (int32_t)w[(r) * kernel_width + (k)])
#define EDGEOPT_CHANNELS(sum)                                                                    \
    for (c = 0; c < channels; ++c) {                                                             \
        acc += (uint32_t)(sum);                                                                  \
        x += plane;                                                                              \
        w += taps;                                                                               \
    }

/* sum x * w over a window's valid rectangle (x and w point at its first valid tap), modulo
 * 2^32; the caller takes zero_point * sum(w) off. The shapes that dominate run unrolled: a
 * whole 3x3 kernel (nine products per channel on immediate weight offsets), rows of three
 * and two taps (the border windows of a 3x3 kernel), one tap per channel. */
static uint32_t edgeopt_window_dot(const edgeopt_window *g, const int8_t *x, const int8_t *w)
{
    const int32_t channels = g->channels, plane = g->plane, taps = g->taps;
    const int32_t rows = g->rows, cols = g->cols, row_step = g->row_step;
    const int32_t kernel_width = g->kernel_width;
    uint32_t acc = 0u;
    int32_t c, r, k;
    if (g->col_step == 1 && rows == 3 && cols == 3 && kernel_width == 3 && taps == 9) {
        for (c = 0; c < channels; ++c) {
            const int8_t *x1 = x + row_step;
            const int8_t *x2 = x1 + row_step;
            acc += (uint32_t)((int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] +
                              (int32_t)x[2] * w[2] + (int32_t)x1[0] * w[3] +
                              (int32_t)x1[1] * w[4] + (int32_t)x1[2] * w[5] +
                              (int32_t)x2[0] * w[6] + (int32_t)x2[1] * w[7] +
                              (int32_t)x2[2] * w[8]);
            x += plane;
            w += 9;
        }
    } else if (g->col_step == 1 && rows <= 3 && cols <= 3 && rows + cols == 5) {
        /* the edges of a 3x3 kernel: 2 rows of 3 taps or 3 rows of 2, straight-line code */
        if (rows == 2) {
            EDGEOPT_CHANNELS(EDGEOPT_AT(0, 0) + EDGEOPT_AT(0, 1) + EDGEOPT_AT(0, 2) +
                             EDGEOPT_AT(1, 0) + EDGEOPT_AT(1, 1) + EDGEOPT_AT(1, 2));
        } else {
            EDGEOPT_CHANNELS(EDGEOPT_AT(0, 0) + EDGEOPT_AT(0, 1) + EDGEOPT_AT(1, 0) +
                             EDGEOPT_AT(1, 1) + EDGEOPT_AT(2, 0) + EDGEOPT_AT(2, 1));
        }
    } else if (g->col_step == 1 && rows == 2 && cols == 2) { /* a corner of a 3x3 kernel */
        EDGEOPT_CHANNELS(EDGEOPT_AT(0, 0) + EDGEOPT_AT(0, 1) + EDGEOPT_AT(1, 0) +
                         EDGEOPT_AT(1, 1));
    } else if (rows == 1 && cols == 1) {
        for (c = 0; c < channels; ++c) {
            acc += (uint32_t)((int32_t)*x * (int32_t)*w);
            x += plane;
            w += taps;
        }
    } else if (g->col_step == 1 && cols <= 8) {
        /* rows of 1..8 adjacent taps (the border rows of a 3x3 kernel, 5x5, 10x4 ...), each
         * width its own loop so a row is straight-line code */
        switch (cols) {
        case 1:
            EDGEOPT_ROWS(EDGEOPT_TAP(0));
            break;
        case 2:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1));
            break;
        case 3:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1) + EDGEOPT_TAP(2));
            break;
        case 4:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1) + EDGEOPT_TAP(2) + EDGEOPT_TAP(3));
            break;
        case 5:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1) + EDGEOPT_TAP(2) + EDGEOPT_TAP(3) +
                         EDGEOPT_TAP(4));
            break;
        case 6:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1) + EDGEOPT_TAP(2) + EDGEOPT_TAP(3) +
                         EDGEOPT_TAP(4) + EDGEOPT_TAP(5));
            break;
        case 7:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1) + EDGEOPT_TAP(2) + EDGEOPT_TAP(3) +
                         EDGEOPT_TAP(4) + EDGEOPT_TAP(5) + EDGEOPT_TAP(6));
            break;
        default:
            EDGEOPT_ROWS(EDGEOPT_TAP(0) + EDGEOPT_TAP(1) + EDGEOPT_TAP(2) + EDGEOPT_TAP(3) +
                         EDGEOPT_TAP(4) + EDGEOPT_TAP(5) + EDGEOPT_TAP(6) + EDGEOPT_TAP(7));
            break;
        }
    } else {
        for (c = 0; c < channels; ++c) {
            const int8_t *xr = x + c * plane;
            const int8_t *wr = w + c * taps;
            for (r = 0; r < rows; ++r) {
                for (k = 0; k < cols; ++k) {
                    acc += (uint32_t)((int32_t)xr[k * g->col_step] * (int32_t)wr[k]);
                }
                xr += row_step;
                wr += kernel_width;
            }
        }
    }
    return acc;
}

/* The weights of a window's valid rectangle (first tap ky0, kx0) summed over its channels, from
 * the corner sums of the kernel: corner[r][k] = the weights of taps (<= r, <= k), an integral
 * image (four lookups per rectangle whatever its size); modulo 2^32 like the accumulators. */
static uint32_t edgeopt_rectangle_sum(const uint32_t *corner, const edgeopt_window *g,
                                      int32_t ky0, int32_t kx0)
{
    const int32_t width = g->kernel_width;
    const int32_t last_row = (ky0 + g->rows - 1) * width, last_col = kx0 + g->cols - 1;
    uint32_t sum = corner[last_row + last_col];
    if (ky0 > 0) {
        sum -= corner[(ky0 - 1) * width + last_col];
    }
    if (kx0 > 0) {
        sum -= corner[last_row + kx0 - 1];
        if (ky0 > 0) {
            sum += corner[(ky0 - 1) * width + kx0 - 1];
        }
    }
    return sum;
}

/* The weights of a window's valid rectangle summed over its channels, from the weights. */
static uint32_t edgeopt_rectangle_weights(const edgeopt_window *g, const int8_t *w)
{
    uint32_t sum = 0u;
    int32_t c, r, k;
    for (c = 0; c < g->channels; ++c) {
        for (r = 0; r < g->rows; ++r) {
            for (k = 0; k < g->cols; ++k) {
                sum += (uint32_t)(int32_t)w[c * g->taps + r * g->kernel_width + k];
            }
        }
    }
    return sum;
}

/* Kernels up to this many taps keep their corner sums on the stack (256 bytes), so a border window
 * folds its zero point like an interior one; larger kernels sum their rectangle's weights. */
#define EDGEOPT_MAX_TAPS 64

/* A depthwise 3x3 plane (no dilation): the nine weights stay in registers and an interior
 * window (the zero point folded into `interior`) is nine multiply-adds on three row pointers;
 * a border window sums its valid rectangle through edgeopt_window_dot. */
static void edgeopt_depthwise_3x3(const edgeopt_conv_params *p, const int8_t *x,
                                  const int8_t *w, const uint32_t *corner, uint32_t interior,
                                  int32_t oc, int8_t *out)
{
    const uint32_t bias = p->bias != NULL ? (uint32_t)p->bias[oc] : 0u;
    const int32_t multiplier = p->multiplier[oc], shift = p->shift[oc];
    const int32_t in_height = p->in_height, in_width = p->in_width;
    const int32_t stride_width = p->stride_width, pad_left = p->pad_left;
    const uint32_t in_zero_point = (uint32_t)p->in_zero_point;
    const int32_t out_zero_point = p->out_zero_point;
    const int32_t act_min = p->act_min, act_max = p->act_max, out_width = p->out_width;
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
    const int32_t w6 = w[6], w7 = w[7], w8 = w[8];
    edgeopt_window g;
    int32_t oy, ox, ky0, ky1, kx0, kx1;
    g.channels = 1;
    g.plane = in_height * in_width;
    g.taps = 9;
    g.row_step = in_width;
    g.col_step = 1;
    g.kernel_width = 3;
    for (oy = 0; oy < p->out_height; ++oy) {
        const int32_t y0 = oy * p->stride_height - p->pad_top;
        edgeopt_valid_taps(y0, 1, 3, in_height, &ky0, &ky1);
        g.rows = ky1 - ky0;
        for (ox = 0; ox < out_width; ++ox) {
            const int32_t x0 = ox * stride_width - pad_left;
            uint32_t acc = bias;
            if (g.rows == 3 && x0 >= 0 && x0 + 3 <= in_width) {
                const int8_t *r0 = x + y0 * in_width + x0;
                const int8_t *r1 = r0 + in_width;
                const int8_t *r2 = r1 + in_width;
                acc = interior + (uint32_t)(r0[0] * w0 + r0[1] * w1 + r0[2] * w2 + r1[0] * w3 +
                                            r1[1] * w4 + r1[2] * w5 + r2[0] * w6 + r2[1] * w7 +
                                            r2[2] * w8);
            } else {
                edgeopt_valid_taps(x0, 1, 3, in_width, &kx0, &kx1);
                g.cols = kx1 - kx0;
                if (g.rows > 0 && g.cols > 0) {
                    const int32_t first = ky0 * 3 + kx0;
                    acc = bias - in_zero_point * edgeopt_rectangle_sum(corner, &g, ky0, kx0) +
                          edgeopt_window_dot(&g, x + (y0 + ky0) * in_width + x0 + kx0,
                                             w + first);
                }
            }
            *out++ = edgeopt_output(edgeopt_signed(acc), multiplier, shift, out_zero_point,
                                    act_min, act_max);
        }
    }
}

/* The output plane of one output channel: x holds its group's input channels, w its weights.
 * The input zero point is folded out of the windows: acc = bias + sum x * w - zero_point *
 * (the sum of the weights the window covers), modulo 2^32 like every accumulator. A window
 * inside the input covers them all (taken from the bias once); a window that crosses the border
 * covers a smaller rectangle of taps, no tap needs a bounds check, and its weight sum comes
 * from the per-tap sums. */
static void edgeopt_conv_windows(const edgeopt_conv_params *p, int32_t channels, int32_t oc,
                                 const int8_t *x, const int8_t *w, int8_t *out)
{
    /* Parameters in locals: a store through the int8 output may alias any object, so fields
     * read through p inside the loops would be loaded again after every output. */
    const uint32_t bias = p->bias != NULL ? (uint32_t)p->bias[oc] : 0u;
    const int32_t multiplier = p->multiplier[oc], shift = p->shift[oc];
    const int32_t in_height = p->in_height, in_width = p->in_width;
    const int32_t kernel_height = p->kernel_height, kernel_width = p->kernel_width;
    const int32_t stride_width = p->stride_width, pad_left = p->pad_left;
    const int32_t dilation_height = p->dilation_height, dilation_width = p->dilation_width;
    const uint32_t in_zero_point = (uint32_t)p->in_zero_point;
    const int32_t out_zero_point = p->out_zero_point;
    const int32_t act_min = p->act_min, act_max = p->act_max, out_width = p->out_width;
    const int32_t taps = kernel_height * kernel_width;
    uint32_t corner[EDGEOPT_MAX_TAPS];
    edgeopt_window g;
    uint32_t weight_sum = 0u, interior;
    int32_t c, t, oy, ox, ky0, ky1, kx0, kx1;
    g.channels = channels;
    g.plane = in_height * in_width;
    g.taps = taps;
    g.row_step = dilation_height * in_width;
    g.col_step = dilation_width;
    g.kernel_width = kernel_width;
    if (taps <= EDGEOPT_MAX_TAPS) { /* corner sums: see edgeopt_rectangle_sum */
        for (t = 0; t < taps; ++t) {
            const int32_t row = t / kernel_width, col = t % kernel_width;
            uint32_t sum = 0u;
            for (c = 0; c < channels; ++c) {
                sum += (uint32_t)(int32_t)w[c * taps + t];
            }
            if (row > 0) {
                sum += corner[t - kernel_width];
            }
            if (col > 0) {
                sum += corner[t - 1];
                if (row > 0) {
                    sum -= corner[t - kernel_width - 1];
                }
            }
            corner[t] = sum;
        }
        weight_sum = corner[taps - 1];
    } else {
        for (t = 0; t < channels * taps; ++t) {
            weight_sum += (uint32_t)(int32_t)w[t];
        }
    }
    interior = bias - in_zero_point * weight_sum;
    if (channels == 1 && kernel_height == 3 && kernel_width == 3 && dilation_height == 1 &&
        dilation_width == 1) {
        edgeopt_depthwise_3x3(p, x, w, corner, interior, oc, out);
        return;
    }
    for (oy = 0; oy < p->out_height; ++oy) {
        const int32_t y0 = oy * p->stride_height - p->pad_top;
        edgeopt_valid_taps(y0, dilation_height, kernel_height, in_height, &ky0, &ky1);
        g.rows = ky1 - ky0;
        for (ox = 0; ox < out_width; ++ox) {
            const int32_t x0 = ox * stride_width - pad_left;
            uint32_t acc = bias; /* a window that lies in the padding */
            edgeopt_valid_taps(x0, dilation_width, kernel_width, in_width, &kx0, &kx1);
            g.cols = kx1 - kx0;
            if (g.rows > 0 && g.cols > 0) {
                const int32_t first = ky0 * kernel_width + kx0;
                const int8_t *xw = x + (y0 + ky0 * dilation_height) * in_width + x0 +
                                   kx0 * dilation_width;
                acc = interior;
                if (g.rows != kernel_height || g.cols != kernel_width) {
                    acc = bias - in_zero_point * (taps <= EDGEOPT_MAX_TAPS
                                                      ? edgeopt_rectangle_sum(corner, &g, ky0, kx0)
                                                      : edgeopt_rectangle_weights(&g, w + first));
                }
                acc += edgeopt_window_dot(&g, xw, w + first);
            }
            *out++ = edgeopt_output(edgeopt_signed(acc), multiplier, shift, out_zero_point,
                                    act_min, act_max);
        }
    }
}

/* A 1x1 convolution without padding (ResNet's strided shortcuts): every window is one valid
 * tap per channel, the input zero point folds into the bias, and the sum runs down the
 * channels. With the DSP extension and stride 2, one word of a channel row holds the inputs
 * of two outputs in bytes 0 and 2, which SXTB16 extends into the halves SMLABB / SMLATB read. */
static void edgeopt_conv1x1(const edgeopt_conv_params *p, int32_t channels, int32_t oc,
                            const int8_t *x, const int8_t *w, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width, in_width = p->in_width;
    const int32_t stride_height = p->stride_height, stride_width = p->stride_width;
    const int32_t multiplier = p->multiplier[oc], shift = p->shift[oc];
    const int32_t out_zero_point = p->out_zero_point, act_min = p->act_min, act_max = p->act_max;
    const int32_t out_width = p->out_width;
    uint32_t weight_sum = 0u, interior;
    int32_t c, oy, ox;
    for (c = 0; c < channels; ++c) {
        weight_sum += (uint32_t)(int32_t)w[c];
    }
    interior = (p->bias != NULL ? (uint32_t)p->bias[oc] : 0u) -
               (uint32_t)p->in_zero_point * weight_sum;
    for (oy = 0; oy < p->out_height; ++oy) {
        const int8_t *row = x + oy * stride_height * in_width;
        ox = 0;
#if EDGEOPT_ARM_DSP
        if (stride_width == 2) {
            for (; 2 * ox + 8 <= in_width && ox + 4 <= out_width; ox += 4) {
                const int8_t *xc = row + 2 * ox;
                int32_t acc0 = (int32_t)interior, acc1 = acc0, acc2 = acc0, acc3 = acc0;
                for (c = 0; c < channels; ++c) {
                    const int32_t low = __sxtb16(edgeopt_load4(xc));
                    const int32_t high = __sxtb16(edgeopt_load4(xc + 4));
                    const int32_t weight = w[c];
                    acc0 = __smlabb(low, weight, acc0);
                    acc1 = __smlatb(low, weight, acc1);
                    acc2 = __smlabb(high, weight, acc2);
                    acc3 = __smlatb(high, weight, acc3);
                    xc += plane;
                }
                *out++ = edgeopt_output(acc0, multiplier, shift, out_zero_point, act_min, act_max);
                *out++ = edgeopt_output(acc1, multiplier, shift, out_zero_point, act_min, act_max);
                *out++ = edgeopt_output(acc2, multiplier, shift, out_zero_point, act_min, act_max);
                *out++ = edgeopt_output(acc3, multiplier, shift, out_zero_point, act_min, act_max);
            }
        }
#endif
        for (; ox < out_width; ++ox) {
            const int8_t *xc = row + ox * stride_width;
            uint32_t acc = interior;
            for (c = 0; c < channels; ++c) {
                acc += (uint32_t)((int32_t)xc[c * plane] * (int32_t)w[c]);
            }
            *out++ = edgeopt_output(edgeopt_signed(acc), multiplier, shift, out_zero_point,
                                    act_min, act_max);
        }
    }
}

void edgeopt_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t group_in = p->in_channels / p->groups;
    const int32_t group_out = p->out_channels / p->groups;
    const int32_t plane = p->in_height * p->in_width;
    const int32_t taps = p->kernel_height * p->kernel_width;
    const int32_t outputs = p->out_height * p->out_width;
    int32_t oc;
    const int32_t is_1x1 = taps == 1 && p->pad_top == 0 && p->pad_left == 0 &&
                           (p->out_height - 1) * p->stride_height < p->in_height &&
                           (p->out_width - 1) * p->stride_width < p->in_width;
    for (oc = 0; oc < p->out_channels; ++oc) {
        const int8_t *x = in + (oc / group_out) * group_in * plane;
        const int8_t *w = p->weights + oc * group_in * taps;
        if (is_1x1) {
            edgeopt_conv1x1(p, group_in, oc, x, w, out + oc * outputs);
        } else {
            edgeopt_conv_windows(p, group_in, oc, x, w, out + oc * outputs);
        }
    }
}

void edgeopt_depthwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t depth_multiplier = p->out_channels / p->in_channels;
    const int32_t plane = p->in_height * p->in_width;
    const int32_t taps = p->kernel_height * p->kernel_width;
    const int32_t outputs = p->out_height * p->out_width;
    int32_t oc;
    for (oc = 0; oc < p->out_channels; ++oc) {
        edgeopt_conv_windows(p, 1, oc, in + (oc / depth_multiplier) * plane,
                             p->weights + oc * taps, out + oc * outputs);
    }
}

/* 1x1, stride 1, no padding: every input value is valid, so the input zero point is folded
 * into the bias by the generator (bias - zero_point * sum(weights)). With the DSP extension
 * four neighbouring pixels of a channel come in one word, SXTB16 splits them into two pairs
 * of halves, and each pair meets the channel's weight in SMLABB / SMLATB (NCHW: a pixel's
 * channels lie a plane apart, so the pixels share the weight instead). */
void edgeopt_pointwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width;
    const int32_t channels = p->in_channels;
    const int32_t out_zero_point = p->out_zero_point, act_min = p->act_min, act_max = p->act_max;
    int32_t oc, pixel, ic;
    for (oc = 0; oc < p->out_channels; ++oc) {
        const int8_t *w = p->weights + oc * channels;
        const uint32_t bias = (uint32_t)p->bias[oc];
        const int32_t multiplier = p->multiplier[oc], shift = p->shift[oc];
        int8_t *o = out + oc * plane;
        pixel = 0;
#if EDGEOPT_ARM_DSP
        for (; pixel + 4 <= plane; pixel += 4) {
            const int8_t *x = in + pixel;
            int32_t acc0 = (int32_t)p->bias[oc], acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (ic = 0; ic < channels; ++ic) {
                const uint32_t word = edgeopt_load4(x);
                const int32_t even = __sxtb16(word), odd = edgeopt_odd_bytes(word);
                const int32_t weight = w[ic];
                acc0 = __smlabb(even, weight, acc0);
                acc1 = __smlabb(odd, weight, acc1);
                acc2 = __smlatb(even, weight, acc2);
                acc3 = __smlatb(odd, weight, acc3);
                x += plane;
            }
            o[pixel] = edgeopt_output(acc0, multiplier, shift, out_zero_point, act_min, act_max);
            o[pixel + 1] =
                edgeopt_output(acc1, multiplier, shift, out_zero_point, act_min, act_max);
            o[pixel + 2] =
                edgeopt_output(acc2, multiplier, shift, out_zero_point, act_min, act_max);
            o[pixel + 3] =
                edgeopt_output(acc3, multiplier, shift, out_zero_point, act_min, act_max);
        }
#endif
        for (; pixel < plane; ++pixel) {
            const int8_t *x = in + pixel;
            uint32_t acc = bias;
            for (ic = 0; ic < channels; ++ic) {
                acc += (uint32_t)((int32_t)x[ic * plane] * (int32_t)w[ic]);
            }
            o[pixel] = edgeopt_output(edgeopt_signed(acc), multiplier, shift, out_zero_point,
                                      act_min, act_max);
        }
    }
}

/* With the DSP extension: four inputs and four weights per pair of loads, SXTB16 pairs them
 * (bytes 0 and 2, bytes 1 and 3) and two SMLADs add the four products, as CMSIS-NN's
 * arm_nn_vec_mat_mult_t_s8 does. */
static int32_t edgeopt_dot(const edgeopt_fc_params *p, const int8_t *in, int32_t o)
{
    const int8_t *w = p->weights + o * p->in_features;
    const int32_t features = p->in_features;
    uint32_t acc;
    int32_t i = 0;
#if EDGEOPT_ARM_DSP
    int32_t sum = p->bias[o];
    for (; i + 8 <= features; i += 8) { /* two words a step: less loop per product */
        const uint32_t x4 = edgeopt_load4(in + i), w4 = edgeopt_load4(w + i);
        const uint32_t x8 = edgeopt_load4(in + i + 4), w8 = edgeopt_load4(w + i + 4);
        sum = __smlad(__sxtb16(x4), __sxtb16(w4), sum);
        sum = __smlad(edgeopt_odd_bytes(x4), edgeopt_odd_bytes(w4), sum);
        sum = __smlad(__sxtb16(x8), __sxtb16(w8), sum);
        sum = __smlad(edgeopt_odd_bytes(x8), edgeopt_odd_bytes(w8), sum);
    }
    for (; i + 4 <= features; i += 4) {
        const uint32_t x4 = edgeopt_load4(in + i), w4 = edgeopt_load4(w + i);
        sum = __smlad(__sxtb16(x4), __sxtb16(w4), sum);
        sum = __smlad(edgeopt_odd_bytes(x4), edgeopt_odd_bytes(w4), sum);
    }
    acc = (uint32_t)sum;
#else
    acc = (uint32_t)p->bias[o];
#endif
    for (; i < features; ++i) {
        acc += (uint32_t)((int32_t)in[i] * (int32_t)w[i]);
    }
    return edgeopt_signed(acc);
}

void edgeopt_fully_connected(const edgeopt_fc_params *p, const int8_t *in, int8_t *out)
{
    int32_t o;
    for (o = 0; o < p->out_features; ++o) {
        out[o] = edgeopt_output(edgeopt_dot(p, in, o), p->multiplier[o], p->shift[o],
                                p->out_zero_point, p->act_min, p->act_max);
    }
}

void edgeopt_fully_connected_f32(const edgeopt_fc_params *p, const int8_t *in, float *out)
{
    int32_t o;
    for (o = 0; o < p->out_features; ++o) {
        out[o] = (float)edgeopt_dot(p, in, o) * p->out_scale[o];
    }
}

/* Each window's valid taps form a rectangle (edgeopt_valid_taps), so no tap is bounds-checked;
 * a whole 2x2 window (the common pool) is three comparisons. */
void edgeopt_max_pool2d(const edgeopt_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t in_height = p->in_height, in_width = p->in_width;
    const int32_t kernel_height = p->kernel_height, kernel_width = p->kernel_width;
    const int32_t stride_width = p->stride_width, pad_left = p->pad_left;
    const int32_t out_width = p->out_width;
    const int8_t *table = p->table;
    const int32_t plane = in_height * in_width;
    int32_t c, oy, ox, ky, kx, ky0, ky1, kx0, kx1;
    for (c = 0; c < p->channels; ++c) {
        const int8_t *x = in + c * plane;
        for (oy = 0; oy < p->out_height; ++oy) {
            const int32_t y0 = oy * p->stride_height - p->pad_top;
            edgeopt_valid_taps(y0, 1, kernel_height, in_height, &ky0, &ky1);
            for (ox = 0; ox < out_width; ++ox) {
                const int32_t x0 = ox * stride_width - pad_left;
                int32_t best = -128;
                edgeopt_valid_taps(x0, 1, kernel_width, in_width, &kx0, &kx1);
                if (ky1 - ky0 == 2 && kx1 - kx0 == 2) {
                    const int8_t *r0 = x + (y0 + ky0) * in_width + x0 + kx0;
                    const int32_t top = r0[0] > r0[1] ? r0[0] : r0[1];
                    const int32_t bottom =
                        r0[in_width] > r0[in_width + 1] ? r0[in_width] : r0[in_width + 1];
                    best = top > bottom ? top : bottom;
                } else {
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *row = x + (y0 + ky) * in_width + x0;
                        for (kx = kx0; kx < kx1; ++kx) {
                            if (row[kx] > best) {
                                best = row[kx];
                            }
                        }
                    }
                }
                *out++ = table != NULL ? table[best + 128] : (int8_t)best;
            }
        }
    }
}

/* In float like ONNX Runtime's QLinearAveragePool: averages of integers land on .5 often, and
 * the float sum's rounding decides those ties, so integer arithmetic would differ there. */
void edgeopt_avg_pool2d(const edgeopt_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width;
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->channels; ++c) {
        const int8_t *x = in + c * plane;
        for (oy = 0; oy < p->out_height; ++oy) {
            const int32_t y0 = oy * p->stride_height - p->pad_top;
            for (ox = 0; ox < p->out_width; ++ox) {
                const int32_t x0 = ox * p->stride_width - p->pad_left;
                float sum = 0.0f;
                int32_t count = 0;
                for (ky = 0; ky < p->kernel_height; ++ky) {
                    const int32_t iy = y0 + ky;
                    if (iy < 0 || iy >= p->in_height) {
                        continue;
                    }
                    for (kx = 0; kx < p->kernel_width; ++kx) {
                        const int32_t ix = x0 + kx;
                        if (ix >= 0 && ix < p->in_width) {
                            sum += p->in_scale *
                                   (float)((int32_t)x[iy * p->in_width + ix] - p->in_zero_point);
                            count += 1;
                        }
                    }
                }
                if (p->count_include_pad) {
                    count = p->kernel_height * p->kernel_width;
                }
                if (count > 0) {
                    sum /= (float)count;
                }
                *out++ = edgeopt_clamp(
                    (int64_t)edgeopt_round_float(
                        sum / p->out_scale + (float)(p->out_zero_point + p->out_offset)) -
                        p->out_offset,
                    -128, 127);
            }
        }
    }
}

/* multiplier / 2^shift = input_scale / (output_scale * height * width). */
void edgeopt_global_avg_pool(const edgeopt_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width;
    int32_t c, i;
    for (c = 0; c < p->channels; ++c) {
        const int8_t *x = in + c * plane;
        int32_t sum = -p->in_zero_point * plane;
        for (i = 0; i < plane; ++i) {
            sum += x[i];
        }
        out[c] = edgeopt_output(sum, p->multiplier, p->shift, p->out_zero_point, -128, 127);
    }
}

void edgeopt_add(const edgeopt_add_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int64_t sum = (int64_t)((int32_t)a[i] - p->a_zero_point) * p->a_multiplier +
                            (int64_t)((int32_t)b[i] - p->b_zero_point) * p->b_multiplier;
        out[i] = edgeopt_clamp(edgeopt_round_shift(sum, p->shift) + p->out_zero_point, p->act_min,
                               p->act_max);
    }
}

/* round(float(float(product * scale) + zero_point)) in integers, the way float32 arithmetic
 * rounds each step (ONNX Runtime's QLinearMul): the product of two int8 differences is exact in
 * float, the multiply and the add each round to 24 significant bits, then ties go to even. */
static int32_t edgeopt_scale_add(int32_t product, int32_t multiplier, int32_t shift,
                                 int32_t zero_point)
{
    const uint64_t magnitude = product < 0 ? (uint64_t)(-(int64_t)product) : (uint64_t)product;
    const uint64_t scaled = edgeopt_float_bits(magnitude * (uint64_t)multiplier);
    int64_t sum;
    uint64_t rounded;
    if (shift > 54) { /* |product * scale| < 2^-7: the sum rounds to the zero point */
        return zero_point;
    }
    sum = (product < 0 ? -(int64_t)scaled : (int64_t)scaled) + ((int64_t)zero_point << shift);
    rounded = edgeopt_round_shift_unsigned(
        edgeopt_float_bits(sum < 0 ? (uint64_t)(-sum) : (uint64_t)sum), shift);
    return sum < 0 ? -(int32_t)rounded : (int32_t)rounded;
}

void edgeopt_mul(const edgeopt_mul_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    const int32_t zero_point = p->out_zero_point + p->out_offset;
    int32_t j, k;
    for (j = 0; j < p->size / p->b_inner; ++j) {
        const int32_t gate = (int32_t)b[j] - p->b_zero_point;
        for (k = 0; k < p->b_inner; ++k) {
            const int32_t product = ((int32_t)*a++ - p->a_zero_point) * gate;
            const int32_t value =
                edgeopt_scale_add(product, p->multiplier, p->shift, zero_point) - p->out_offset;
            *out++ = edgeopt_clamp(value, p->act_min, p->act_max);
        }
    }
}

void edgeopt_concat(const edgeopt_concat_params *p, const int8_t *in, int8_t *out)
{
    int32_t o, i;
    for (o = 0; o < p->outer; ++o) {
        const int8_t *src = in + o * p->in_inner;
        int8_t *dst = out + o * p->out_inner + p->offset;
        for (i = 0; i < p->in_inner; ++i) {
            dst[i] = p->table != NULL ? p->table[(int32_t)src[i] + 128] : src[i];
        }
    }
}

void edgeopt_split(const edgeopt_concat_params *p, const int8_t *in, int8_t *out)
{
    int32_t o, i;
    for (o = 0; o < p->outer; ++o) {
        const int8_t *src = in + o * p->in_inner + p->offset;
        int8_t *dst = out + o * p->out_inner;
        for (i = 0; i < p->out_inner; ++i) {
            dst[i] = p->table != NULL ? p->table[(int32_t)src[i] + 128] : src[i];
        }
    }
}

void edgeopt_transpose(const edgeopt_transpose_params *p, const int8_t *in, int8_t *out)
{
    int32_t stride[4], step[4], size[4];
    int32_t k, i0, i1, i2, i3;
    stride[3] = 1;
    for (k = 2; k >= 0; --k) {
        stride[k] = stride[k + 1] * p->in_shape[k + 1];
    }
    for (k = 0; k < 4; ++k) {
        size[k] = p->in_shape[p->perm[k]];
        step[k] = stride[p->perm[k]];
    }
    for (i0 = 0; i0 < size[0]; ++i0) {
        for (i1 = 0; i1 < size[1]; ++i1) {
            for (i2 = 0; i2 < size[2]; ++i2) {
                const int8_t *x = in + i0 * step[0] + i1 * step[1] + i2 * step[2];
                for (i3 = 0; i3 < size[3]; ++i3) {
                    *out++ = x[i3 * step[3]];
                }
            }
        }
    }
}

/* Transposed convolution (ONNX ConvTranspose, group 1, no dilation); weights
 * [in_channels][out_channels][kh][kw] as ONNX stores them. Output pixel oy sums input pixel iy
 * through kernel tap ky where oy = iy * stride - pad_top + ky: the integer sum of a
 * convolution over the zero-inserted input, requantized as edgeopt_conv2d requantizes. */
void edgeopt_conv_transpose2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t plane = p->in_height * p->in_width;
    const int32_t taps = p->kernel_height * p->kernel_width;
    int32_t oc, oy, ox, ic, ky, kx;
    for (oc = 0; oc < p->out_channels; ++oc) {
        const uint32_t bias = p->bias != NULL ? (uint32_t)p->bias[oc] : 0u;
        for (oy = 0; oy < p->out_height; ++oy) {
            for (ox = 0; ox < p->out_width; ++ox) {
                uint32_t acc = bias;
                for (ic = 0; ic < p->in_channels; ++ic) {
                    const int8_t *xc = in + ic * plane;
                    const int8_t *wc = p->weights + (ic * p->out_channels + oc) * taps;
                    for (ky = 0; ky < p->kernel_height; ++ky) {
                        const int32_t ty = oy + p->pad_top - ky;
                        int32_t iy;
                        if (ty < 0 || ty % p->stride_height != 0) {
                            continue;
                        }
                        iy = ty / p->stride_height;
                        if (iy >= p->in_height) {
                            continue;
                        }
                        for (kx = 0; kx < p->kernel_width; ++kx) {
                            const int32_t tx = ox + p->pad_left - kx;
                            int32_t ix;
                            if (tx < 0 || tx % p->stride_width != 0) {
                                continue;
                            }
                            ix = tx / p->stride_width;
                            if (ix >= p->in_width) {
                                continue;
                            }
                            acc += (uint32_t)(((int32_t)xc[iy * p->in_width + ix] - p->in_zero_point) *
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

/* Nearest resize (ONNX Resize, mode nearest): output pixel (y, x) of each channel copies input
 * pixel (rows[y], cols[x]); the row and column maps are ONNX Runtime's own choices. */
void edgeopt_resize_nearest(const edgeopt_resize_params *p, const int8_t *in, int8_t *out)
{
    int32_t c, y, x;
    for (c = 0; c < p->channels; ++c) {
        const int8_t *plane = in + c * p->in_height * p->in_width;
        for (y = 0; y < p->out_height; ++y) {
            const int8_t *row = plane + p->rows[y] * p->in_width;
            for (x = 0; x < p->out_width; ++x) {
                const int8_t value = row[p->cols[x]];
                *out++ = p->table != NULL ? p->table[(int32_t)value + 128] : value;
            }
        }
    }
}

void edgeopt_lookup(const int8_t *table, const int8_t *in, int8_t *out, int32_t size)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = table[(int32_t)in[i] + 128];
    }
}

void edgeopt_lookup_u8(const int8_t *tables, const uint8_t *in, int8_t *out, int32_t channels,
                       int32_t inner)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const int8_t *table = tables + 256 * c;
        for (i = 0; i < inner; ++i) {
            out[c * inner + i] = table[in[c * inner + i]];
        }
    }
}

void edgeopt_lookup_s8(const int8_t *tables, const int8_t *in, int8_t *out, int32_t channels,
                       int32_t inner)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const int8_t *table = tables + 256 * c;
        for (i = 0; i < inner; ++i) {
            out[c * inner + i] = table[(int32_t)in[c * inner + i] + 128];
        }
    }
}

/* e^x for x <= 0 without libm: x = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite), e^r by its
 * degree-7 Taylor polynomial (relative error below 1e-8), times 2^k built in the exponent. */
static float edgeopt_exp_nonpositive(float x)
{
    union {
        uint32_t bits;
        float value;
    } power;
    float k, r, e;
    if (x < -87.0f) {
        return 0.0f;
    }
    k = (float)edgeopt_round_float(x * 1.44269504f);
    r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
    e = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f +
        r * (8.33333333e-3f + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
    power.bits = (uint32_t)((int32_t)k + 127) << 23;
    return e * power.value;
}

void edgeopt_softmax_f32(const int8_t *in, float *out, int32_t rows, int32_t size, float scale,
                         int32_t zero_point)
{
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        const int8_t *x = in + r * size;
        float *y = out + r * size;
        float top, sum = 0.0f;
        int32_t largest = x[0];
        for (i = 1; i < size; ++i) {
            if (x[i] > largest) {
                largest = x[i];
            }
        }
        top = (float)(largest - zero_point) * scale;
        for (i = 0; i < size; ++i) {
            y[i] = edgeopt_exp_nonpositive((float)((int32_t)x[i] - zero_point) * scale - top);
            sum += y[i];
        }
        for (i = 0; i < size; ++i) {
            y[i] /= sum;
        }
    }
}

void edgeopt_quantize_u8(const float *in, uint8_t *out, int32_t size, float scale,
                         int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        const int64_t q = (int64_t)edgeopt_round_float(in[i] / scale) + zero_point;
        out[i] = (uint8_t)(q < 0 ? 0 : (q > 255 ? 255 : q));
    }
}

void edgeopt_quantize_s8(const float *in, int8_t *out, int32_t size, float scale,
                         int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = edgeopt_clamp((int64_t)edgeopt_round_float(in[i] / scale) + zero_point, -128,
                               127);
    }
}

void edgeopt_from_u8(const uint8_t *in, int8_t *out, int32_t size)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = (int8_t)((int32_t)in[i] - 128);
    }
}

void edgeopt_to_u8(const int8_t *in, uint8_t *out, int32_t size)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = (uint8_t)((int32_t)in[i] + 128);
    }
}

void edgeopt_copy(const int8_t *in, int8_t *out, int32_t size)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = in[i];
    }
}
