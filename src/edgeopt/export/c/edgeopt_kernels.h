/* edgeopt int8 kernels: portable C99, no malloc, no global state.
 *
 * Layout: NCHW without the batch (ONNX's own order), so Flatten and Reshape are free views.
 * Activations are stored as int8 with a zero point: an ONNX uint8 tensor is stored as
 * (value - 128) with its zero point lowered by 128, which is exact. Weights are int8, symmetric
 * (zero point 0), per output channel.
 *
 * Requantization follows TFLite / CMSIS-NN (Jacob et al. 2018, "Quantization and Training of
 * Neural Networks for Efficient Integer-Arithmetic-Only Inference", section 2.2): the real
 * multiplier M = input_scale * weight_scale / output_scale is stored as an int32 `multiplier`
 * and a right `shift` with M = multiplier * 2^-shift; the 64-bit product is rounded once, to
 * nearest with ties to even (what ONNX Runtime's float requantization does), so results match
 * ONNX Runtime to within one step.
 *
 * Softmax runs in float (its exponential is computed here: no libm needed).
 *
 * Speed without changing a bit: convolution windows inside the input skip the bounds checks and
 * take the input zero point off once (bias - zero_point * sum(weights), modulo 2^32 as every
 * accumulator); where the compiler defines __ARM_FEATURE_DSP (Cortex-M4, M7, M33, M55) the 1x1 and
 * fully connected dot products use SXTB16 / SMLAD (Arm ACLE intrinsics, the approach of Arm's
 * CMSIS-NN), elsewhere portable C computes the same bits. A general convolution keeps 256 bytes
 * of per-kernel weight sums on the stack: its deepest call takes about 740 bytes of stack on a
 * Cortex-M4 (arm-none-eabi-gcc -O2 -fstack-usage; the other kernels 120 or less).
 */
#ifndef EDGEOPT_KERNELS_H
#define EDGEOPT_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Convolution (general, grouped, depthwise and 1x1 pointwise share these parameters). */
typedef struct {
    int32_t in_channels, in_height, in_width;
    int32_t out_channels, out_height, out_width;
    int32_t kernel_height, kernel_width;
    int32_t stride_height, stride_width;
    int32_t pad_top, pad_left;
    int32_t dilation_height, dilation_width;
    int32_t groups;
    int32_t in_zero_point, out_zero_point;
    int32_t act_min, act_max;         /* clamp after requantization (ReLU / ReLU6 fused) */
    const int8_t *weights;            /* [out_channels][in_channels / groups][kh][kw] */
    const int32_t *bias;              /* [out_channels]; pointwise: zero point folded in */
    const int32_t *multiplier;        /* [out_channels] */
    const int32_t *shift;             /* [out_channels] */
} edgeopt_conv_params;

/* Fully connected: out[o] = sum_i in[i] * weights[o][i] + bias[o] (input zero point folded
 * into bias), requantized to int8, or scaled to float by out_scale[o]. */
typedef struct {
    int32_t in_features, out_features;
    int32_t out_zero_point;
    int32_t act_min, act_max;
    const int8_t *weights;            /* [out_features][in_features] */
    const int32_t *bias;              /* [out_features] */
    const int32_t *multiplier;        /* [out_features], int8 output */
    const int32_t *shift;             /* [out_features], int8 output */
    const float *out_scale;           /* [out_features], float output */
} edgeopt_fc_params;

/* Max, average and global average pooling. */
typedef struct {
    int32_t channels, in_height, in_width, out_height, out_width;
    int32_t kernel_height, kernel_width, stride_height, stride_width, pad_top, pad_left;
    int32_t count_include_pad;        /* average: divide by the kernel area */
    int32_t in_zero_point, out_zero_point;
    int32_t multiplier, shift;        /* global average: input_scale / (output_scale * area) */
    float in_scale, out_scale;        /* average (float, as ONNX Runtime computes it) */
    int32_t out_offset;               /* average: ONNX zero point - stored zero point */
    const int8_t *table;              /* max: requantization table or NULL (same scale) */
} edgeopt_pool_params;

/* Element-wise add of two tensors of one shape, each rescaled to the output scale. */
typedef struct {
    int32_t size;
    int32_t a_zero_point, b_zero_point, out_zero_point;
    int32_t a_multiplier, b_multiplier, shift;
    int32_t act_min, act_max;
} edgeopt_add_params;

/* Element-wise multiply; b is broadcast over runs of `b_inner` values of a (b_inner 1: the same
 * shape; H*W: a per-channel gate). multiplier / 2^shift = a_scale * b_scale / out_scale. */
typedef struct {
    int32_t size, b_inner;
    int32_t a_zero_point, b_zero_point, out_zero_point, out_offset;
    int32_t multiplier, shift;
    int32_t act_min, act_max;
} edgeopt_mul_params;

/* One input of a concatenation: `outer` blocks of `in_inner` values, written at `offset`
 * inside blocks of `out_inner` values; or one output of a split: `outer` blocks of `out_inner`
 * values, read at `offset` inside blocks of `in_inner` values. `table` requantizes (NULL: the
 * same scale, copied). */
typedef struct {
    int32_t outer, in_inner, out_inner, offset;
    const int8_t *table;
} edgeopt_concat_params;

/* Transpose of a tensor of up to 4 dimensions (shape padded with leading 1s). */
typedef struct {
    int32_t channels, in_height, in_width, out_height, out_width;
    const int32_t *rows;              /* [out_height]: the input row each output row copies */
    const int32_t *cols;              /* [out_width]: the input column each output column copies */
    const int8_t *table;              /* requantization table or NULL (same scale) */
} edgeopt_resize_params;

typedef struct {
    int32_t in_shape[4];
    int32_t perm[4];
} edgeopt_transpose_params;

int32_t edgeopt_requantize(int32_t acc, int32_t multiplier, int32_t shift);

void edgeopt_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out);
void edgeopt_conv_transpose2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out);
void edgeopt_depthwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out);
void edgeopt_pointwise_conv2d(const edgeopt_conv_params *p, const int8_t *in, int8_t *out);
void edgeopt_fully_connected(const edgeopt_fc_params *p, const int8_t *in, int8_t *out);
void edgeopt_fully_connected_f32(const edgeopt_fc_params *p, const int8_t *in, float *out);
void edgeopt_max_pool2d(const edgeopt_pool_params *p, const int8_t *in, int8_t *out);
void edgeopt_avg_pool2d(const edgeopt_pool_params *p, const int8_t *in, int8_t *out);
void edgeopt_global_avg_pool(const edgeopt_pool_params *p, const int8_t *in, int8_t *out);
void edgeopt_add(const edgeopt_add_params *p, const int8_t *a, const int8_t *b, int8_t *out);
void edgeopt_mul(const edgeopt_mul_params *p, const int8_t *a, const int8_t *b, int8_t *out);
void edgeopt_concat(const edgeopt_concat_params *p, const int8_t *in, int8_t *out);
void edgeopt_split(const edgeopt_concat_params *p, const int8_t *in, int8_t *out);
void edgeopt_transpose(const edgeopt_transpose_params *p, const int8_t *in, int8_t *out);
void edgeopt_resize_nearest(const edgeopt_resize_params *p, const int8_t *in, int8_t *out);
/* out[i] = table[in[i] + 128]: any function of one int8 value (requantization, activations). */
void edgeopt_lookup(const int8_t *table, const int8_t *in, int8_t *out, int32_t size);
/* Raw input of a folded model: `channels` runs of `inner` values, run c mapped through
 * tables[256 * c ...]: out = tables[256 * c + in] (uint8 input) or [... + in + 128] (int8). */
void edgeopt_lookup_u8(const int8_t *tables, const uint8_t *in, int8_t *out, int32_t channels,
                       int32_t inner);
void edgeopt_lookup_s8(const int8_t *tables, const int8_t *in, int8_t *out, int32_t channels,
                       int32_t inner);
/* Softmax over the last axis, in float, of a dequantized int8 tensor. */
void edgeopt_softmax_f32(const int8_t *in, float *out, int32_t rows, int32_t size, float scale,
                         int32_t zero_point);

/* Edges: quantize float input, convert between the ONNX uint8 type and int8 storage. */
void edgeopt_quantize_u8(const float *in, uint8_t *out, int32_t size, float scale,
                         int32_t zero_point);
void edgeopt_quantize_s8(const float *in, int8_t *out, int32_t size, float scale,
                         int32_t zero_point);
void edgeopt_from_u8(const uint8_t *in, int8_t *out, int32_t size);
void edgeopt_to_u8(const int8_t *in, uint8_t *out, int32_t size);
void edgeopt_copy(const int8_t *in, int8_t *out, int32_t size);

#ifdef EDGEOPT_TRACE
/* Called after every step with the tensor it wrote (a test hook; define it in the harness). */
void edgeopt_trace(int32_t step, const void *data, int32_t bytes);
#endif

#ifdef __cplusplus
}
#endif

#endif /* EDGEOPT_KERNELS_H */
