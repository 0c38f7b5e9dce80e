/* edgeopt int8 kernels: portable C99 reference implementations (see edgeopt_kernels.h). */
#include "edgeopt_kernels.h"

#include <stddef.h>

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

void edgeopt_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
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

void edgeopt_depthwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
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

/* 1x1, stride 1, no padding: every input value is valid, so the input zero point is folded
 * into the bias by the generator (bias - zero_point * sum(weights)). */
void edgeopt_pointwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out)
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

static int32_t edgeopt_dot(const edgeopt_fc_params *p, const int8_t *in, int32_t o)
{
    const int8_t *w = p->weights + o * p->in_features;
    uint32_t acc = (uint32_t)p->bias[o];
    int32_t i;
    for (i = 0; i < p->in_features; ++i) {
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

void edgeopt_max_pool2d(const edgeopt_pool_params *p, const int8_t *in, int8_t *out)
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
