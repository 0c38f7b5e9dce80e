/* An implementation of the integer arithmetic and loop structure of TensorFlow Lite Micro's
 * reference int8 kernels, written for edgeopt from their documented behaviour (the TFLite 8-bit
 * quantization specification, https://www.tensorflow.org/lite/performance/quantization_spec;
 * Jacob et al. 2018, https://arxiv.org/abs/1712.05877) to count instructions beside edgeopt's
 * kernels; it contains no TFLM source. Checked byte for byte against TFLM's interpreter by
 * tests/measure/test_tflm_reference.py. Not part of the edgeopt package.
 *
 * What is counted is the straightforward form of each kernel: every tensor element is addressed
 * through its shape (element_index below) inside the loops, and every accumulator is
 * requantized by a call to a multiplier function that is kept out of line.
 */
#include "tflm_reference.h"

#include <stddef.h>

static inline int32_t smaller(int32_t a, int32_t b) { return a < b ? a : b; }

static inline int32_t larger(int32_t a, int32_t b) { return a > b ? a : b; }

static inline int32_t clamp(int32_t x, int32_t low, int32_t high)
{
    return smaller(larger(x, low), high);
}

/* The flat position of element (i0, i1, i2, i3) in a 4-D NHWC shape. */
static inline int32_t element_index(const tflm_shape *shape, int32_t i0, int32_t i1, int32_t i2,
                                    int32_t i3)
{
    const int32_t *d = shape->dims;
    return ((i0 * d[1] + i1) * d[2] + i2) * d[3] + i3;
}

/* The product of all dimensions but the last one. */
static int32_t leading_size(const tflm_shape *shape)
{
    int32_t size = 1;
    int32_t i;
    for (i = 0; i < shape->size - 1; i++) {
        size *= shape->dims[i];
    }
    return size;
}

/* round(a * b / 2^31) with ties away from zero, in Q31 (the doubling high half of a * b);
 * the one product that overflows, INT32_MIN squared, saturates. */
static int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t product;
    int64_t nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    product = (int64_t)a * (int64_t)b;
    nudge = product >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((product + nudge) / (1LL << 31));
}

/* x / 2^exponent rounded to nearest, ties away from zero. */
static int32_t rounding_divide_by_pot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* Kept out of line, as TFLM's is: one call per output is part of what is counted. */
__attribute__((noinline)) int32_t
tflm_multiply_by_quantized_multiplier(int32_t x, int32_t quantized_multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x * (1 << left), quantized_multiplier), right);
}

/* The add's rescaling: its shifts are never positive. */
static int32_t multiply_by_quantized_multiplier_smaller(int32_t x, int32_t quantized_multiplier,
                                                        int shift)
{
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, quantized_multiplier),
                                  -shift);
}

void tflm_conv_per_channel(const tflm_conv_params *params, const int32_t *output_multiplier,
                           const int32_t *output_shift, const tflm_shape *input_shape,
                           const int8_t *input_data, const tflm_shape *filter_shape,
                           const int8_t *filter_data, const tflm_shape *bias_shape,
                           const int32_t *bias_data, const tflm_shape *output_shape,
                           int8_t *output_data)
{
    const int32_t input_offset = params->input_offset;
    const int32_t output_offset = params->output_offset;
    const int32_t act_min = params->quantized_activation_min;
    const int32_t act_max = params->quantized_activation_max;
    const int stride_w = params->stride_width;
    const int stride_h = params->stride_height;
    const int dilation_w = params->dilation_width_factor;
    const int dilation_h = params->dilation_height_factor;
    const int pad_w = params->padding_values.width;
    const int pad_h = params->padding_values.height;
    const int32_t batches = input_shape->dims[0];
    const int32_t input_h = input_shape->dims[1];
    const int32_t input_w = input_shape->dims[2];
    const int32_t input_depth = input_shape->dims[3];
    const int32_t out_channels = filter_shape->dims[0];
    const int32_t filter_h = filter_shape->dims[1];
    const int32_t filter_w = filter_shape->dims[2];
    const int32_t filter_depth = filter_shape->dims[3];
    const int32_t output_h = output_shape->dims[1];
    const int32_t output_w = output_shape->dims[2];
    const int32_t groups = input_depth / filter_depth;
    const int32_t filters_per_group = out_channels / groups;
    int32_t b, out_y, out_x, out_c, f_y, f_x, in_c;
    (void)bias_shape;
    for (b = 0; b < batches; b++) {
        for (out_y = 0; out_y < output_h; out_y++) {
            const int32_t in_y_origin = out_y * stride_h - pad_h;
            for (out_x = 0; out_x < output_w; out_x++) {
                const int32_t in_x_origin = out_x * stride_w - pad_w;
                for (out_c = 0; out_c < out_channels; out_c++) {
                    const int32_t group = out_c / filters_per_group;
                    int32_t acc = 0;
                    for (f_y = 0; f_y < filter_h; f_y++) {
                        const int32_t in_y = in_y_origin + dilation_h * f_y;
                        for (f_x = 0; f_x < filter_w; f_x++) {
                            const int32_t in_x = in_x_origin + dilation_w * f_x;
                            const int inside =
                                in_x >= 0 && in_x < input_w && in_y >= 0 && in_y < input_h;
                            if (!inside) {
                                continue;
                            }
                            for (in_c = 0; in_c < filter_depth; in_c++) {
                                const int32_t x = input_data[element_index(
                                    input_shape, b, in_y, in_x, in_c + group * filter_depth)];
                                const int32_t w = filter_data[element_index(
                                    filter_shape, out_c, f_y, f_x, in_c)];
                                acc += w * (x + input_offset);
                            }
                        }
                    }
                    if (bias_data != NULL) {
                        acc += bias_data[out_c];
                    }
                    acc = tflm_multiply_by_quantized_multiplier(acc, output_multiplier[out_c],
                                                                output_shift[out_c]);
                    acc += output_offset;
                    acc = clamp(acc, act_min, act_max);
                    output_data[element_index(output_shape, b, out_y, out_x, out_c)] =
                        (int8_t)acc;
                }
            }
        }
    }
}

void tflm_depthwise_conv_per_channel(const tflm_conv_params *params,
                                     const int32_t *output_multiplier,
                                     const int32_t *output_shift, const tflm_shape *input_shape,
                                     const int8_t *input_data, const tflm_shape *filter_shape,
                                     const int8_t *filter_data, const tflm_shape *bias_shape,
                                     const int32_t *bias_data, const tflm_shape *output_shape,
                                     int8_t *output_data)
{
    const int32_t input_offset = params->input_offset;
    const int32_t output_offset = params->output_offset;
    const int32_t act_min = params->quantized_activation_min;
    const int32_t act_max = params->quantized_activation_max;
    const int stride_w = params->stride_width;
    const int stride_h = params->stride_height;
    const int dilation_w = params->dilation_width_factor;
    const int dilation_h = params->dilation_height_factor;
    const int pad_w = params->padding_values.width;
    const int pad_h = params->padding_values.height;
    const int depth_multiplier = params->depth_multiplier;
    const int32_t batches = input_shape->dims[0];
    const int32_t input_h = input_shape->dims[1];
    const int32_t input_w = input_shape->dims[2];
    const int32_t input_depth = input_shape->dims[3];
    const int32_t filter_h = filter_shape->dims[1];
    const int32_t filter_w = filter_shape->dims[2];
    const int32_t output_h = output_shape->dims[1];
    const int32_t output_w = output_shape->dims[2];
    int32_t b, out_y, out_x, in_c, m, f_y, f_x;
    (void)bias_shape;
    for (b = 0; b < batches; b++) {
        for (out_y = 0; out_y < output_h; out_y++) {
            for (out_x = 0; out_x < output_w; out_x++) {
                for (in_c = 0; in_c < input_depth; in_c++) {
                    for (m = 0; m < depth_multiplier; m++) {
                        const int32_t out_c = m + in_c * depth_multiplier;
                        const int32_t in_x_origin = out_x * stride_w - pad_w;
                        const int32_t in_y_origin = out_y * stride_h - pad_h;
                        int32_t acc = 0;
                        for (f_y = 0; f_y < filter_h; f_y++) {
                            const int32_t in_y = in_y_origin + dilation_h * f_y;
                            for (f_x = 0; f_x < filter_w; f_x++) {
                                const int32_t in_x = in_x_origin + dilation_w * f_x;
                                const int inside =
                                    in_x >= 0 && in_x < input_w && in_y >= 0 && in_y < input_h;
                                if (inside) {
                                    const int32_t x = input_data[element_index(
                                        input_shape, b, in_y, in_x, in_c)];
                                    const int32_t w = filter_data[element_index(
                                        filter_shape, 0, f_y, f_x, out_c)];
                                    acc += w * (x + input_offset);
                                }
                            }
                        }
                        if (bias_data != NULL) {
                            acc += bias_data[out_c];
                        }
                        acc = tflm_multiply_by_quantized_multiplier(
                            acc, output_multiplier[out_c], output_shift[out_c]);
                        acc += output_offset;
                        acc = clamp(acc, act_min, act_max);
                        output_data[element_index(output_shape, b, out_y, out_x, out_c)] =
                            (int8_t)acc;
                    }
                }
            }
        }
    }
}

void tflm_fully_connected_per_channel(const tflm_fully_connected_params *params,
                                      const int32_t *output_multiplier,
                                      const int32_t *output_shift,
                                      const tflm_shape *input_shape, const int8_t *input_data,
                                      const tflm_shape *filter_shape, const int8_t *filter_data,
                                      const tflm_shape *bias_shape, const int32_t *bias_data,
                                      const tflm_shape *output_shape, int8_t *output_data)
{
    const int32_t input_offset = params->input_offset;
    const int32_t output_offset = params->output_offset;
    const int32_t act_min = params->quantized_activation_min;
    const int32_t act_max = params->quantized_activation_max;
    const int32_t batches = leading_size(output_shape);
    const int32_t output_depth = output_shape->dims[output_shape->size - 1];
    const int32_t accum_depth = filter_shape->dims[filter_shape->size - 1];
    int32_t b, out_c, d;
    (void)input_shape;
    (void)bias_shape;
    for (b = 0; b < batches; b++) {
        for (out_c = 0; out_c < output_depth; out_c++) {
            int32_t acc = 0;
            for (d = 0; d < accum_depth; d++) {
                const int32_t x = input_data[b * accum_depth + d];
                const int32_t w = filter_data[out_c * accum_depth + d];
                acc += w * (x + input_offset);
            }
            if (bias_data != NULL) {
                acc += bias_data[out_c];
            }
            acc = tflm_multiply_by_quantized_multiplier(acc, output_multiplier[out_c],
                                                        output_shift[out_c]);
            acc += output_offset;
            acc = clamp(acc, act_min, act_max);
            output_data[out_c + output_depth * b] = (int8_t)acc;
        }
    }
}

void tflm_fully_connected(const tflm_fully_connected_params *params,
                          const tflm_shape *input_shape, const int8_t *input_data,
                          const tflm_shape *filter_shape, const int8_t *filter_data,
                          const tflm_shape *bias_shape, const int32_t *bias_data,
                          const tflm_shape *output_shape, int8_t *output_data)
{
    const int32_t input_offset = params->input_offset;
    const int32_t filter_offset = params->weights_offset;
    const int32_t output_offset = params->output_offset;
    const int32_t multiplier = params->output_multiplier;
    const int shift = params->output_shift;
    const int32_t act_min = params->quantized_activation_min;
    const int32_t act_max = params->quantized_activation_max;
    const int32_t batches = leading_size(output_shape);
    const int32_t output_depth = output_shape->dims[output_shape->size - 1];
    const int32_t accum_depth = filter_shape->dims[filter_shape->size - 1];
    int32_t b, out_c, d;
    (void)input_shape;
    (void)bias_shape;
    for (b = 0; b < batches; b++) {
        for (out_c = 0; out_c < output_depth; out_c++) {
            int32_t acc = 0;
            for (d = 0; d < accum_depth; d++) {
                const int32_t x = input_data[b * accum_depth + d];
                const int32_t w = filter_data[out_c * accum_depth + d];
                acc += (w + filter_offset) * (x + input_offset);
            }
            if (bias_data != NULL) {
                acc += bias_data[out_c];
            }
            acc = tflm_multiply_by_quantized_multiplier(acc, multiplier, shift);
            acc += output_offset;
            acc = clamp(acc, act_min, act_max);
            output_data[out_c + output_depth * b] = (int8_t)acc;
        }
    }
}

int tflm_average_pool(const tflm_pool_params *params, const tflm_shape *input_shape,
                      const int8_t *input_data, const tflm_shape *output_shape,
                      int8_t *output_data)
{
    const int32_t batches = input_shape->dims[0];
    const int32_t depth = output_shape->dims[3];
    const int32_t input_h = input_shape->dims[1];
    const int32_t input_w = input_shape->dims[2];
    const int32_t output_h = output_shape->dims[1];
    const int32_t output_w = output_shape->dims[2];
    int32_t b, out_y, out_x, c, f_y, f_x;
    for (b = 0; b < batches; b++) {
        for (out_y = 0; out_y < output_h; out_y++) {
            for (out_x = 0; out_x < output_w; out_x++) {
                for (c = 0; c < depth; c++) {
                    const int32_t in_x_origin =
                        out_x * params->stride_width - params->padding_values.width;
                    const int32_t in_y_origin =
                        out_y * params->stride_height - params->padding_values.height;
                    const int32_t fx_start = larger(0, -in_x_origin);
                    const int32_t fx_end = smaller(params->filter_width, input_w - in_x_origin);
                    const int32_t fy_start = larger(0, -in_y_origin);
                    const int32_t fy_end = smaller(params->filter_height, input_h - in_y_origin);
                    int32_t acc = 0;
                    int32_t count = 0;
                    for (f_y = fy_start; f_y < fy_end; f_y++) {
                        for (f_x = fx_start; f_x < fx_end; f_x++) {
                            acc += input_data[element_index(input_shape, b, in_y_origin + f_y,
                                                            in_x_origin + f_x, c)];
                            count++;
                        }
                    }
                    if (count == 0) {
                        return 0;
                    }
                    /* divide rounding half away from zero */
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    acc = clamp(acc, params->quantized_activation_min,
                                params->quantized_activation_max);
                    output_data[element_index(output_shape, b, out_y, out_x, c)] = (int8_t)acc;
                }
            }
        }
    }
    return 1;
}

void tflm_max_pool(const tflm_pool_params *params, const tflm_shape *input_shape,
                   const int8_t *input_data, const tflm_shape *output_shape, int8_t *output_data)
{
    const int32_t batches = input_shape->dims[0];
    const int32_t depth = output_shape->dims[3];
    const int32_t input_h = input_shape->dims[1];
    const int32_t input_w = input_shape->dims[2];
    const int32_t output_h = output_shape->dims[1];
    const int32_t output_w = output_shape->dims[2];
    int32_t b, out_y, out_x, c, f_y, f_x;
    for (b = 0; b < batches; b++) {
        for (out_y = 0; out_y < output_h; out_y++) {
            for (out_x = 0; out_x < output_w; out_x++) {
                for (c = 0; c < depth; c++) {
                    const int32_t in_x_origin =
                        out_x * params->stride_width - params->padding_values.width;
                    const int32_t in_y_origin =
                        out_y * params->stride_height - params->padding_values.height;
                    const int32_t fx_start = larger(0, -in_x_origin);
                    const int32_t fx_end = smaller(params->filter_width, input_w - in_x_origin);
                    const int32_t fy_start = larger(0, -in_y_origin);
                    const int32_t fy_end = smaller(params->filter_height, input_h - in_y_origin);
                    int32_t best = -128;
                    for (f_y = fy_start; f_y < fy_end; f_y++) {
                        for (f_x = fx_start; f_x < fx_end; f_x++) {
                            best = larger(best, input_data[element_index(input_shape, b,
                                                                         in_y_origin + f_y,
                                                                         in_x_origin + f_x, c)]);
                        }
                    }
                    best = clamp(best, params->quantized_activation_min,
                                 params->quantized_activation_max);
                    output_data[element_index(output_shape, b, out_y, out_x, c)] = (int8_t)best;
                }
            }
        }
    }
}

void tflm_add(const tflm_arithmetic_params *params, const tflm_shape *input1_shape,
              const int8_t *input1_data, const tflm_shape *input2_shape,
              const int8_t *input2_data, const tflm_shape *output_shape, int8_t *output_data)
{
    int32_t size = 1;
    int32_t i;
    (void)input1_shape;
    (void)input2_shape;
    for (i = 0; i < output_shape->size; i++) {
        size *= output_shape->dims[i];
    }
    for (i = 0; i < size; i++) {
        const int32_t v1 = params->input1_offset + input1_data[i];
        const int32_t v2 = params->input2_offset + input2_data[i];
        const int32_t s1 = v1 * (1 << params->left_shift);
        const int32_t s2 = v2 * (1 << params->left_shift);
        const int32_t r1 = multiply_by_quantized_multiplier_smaller(
            s1, params->input1_multiplier, params->input1_shift);
        const int32_t r2 = multiply_by_quantized_multiplier_smaller(
            s2, params->input2_multiplier, params->input2_shift);
        const int32_t raw = multiply_by_quantized_multiplier_smaller(
                                r1 + r2, params->output_multiplier, params->output_shift) +
                            params->output_offset;
        output_data[i] = (int8_t)clamp(raw, params->quantized_activation_min,
                                       params->quantized_activation_max);
    }
}

static void set_shape4(tflm_shape *shape, int32_t d0, int32_t d1, int32_t d2, int32_t d3)
{
    shape->size = 4;
    shape->dims[0] = d0;
    shape->dims[1] = d1;
    shape->dims[2] = d2;
    shape->dims[3] = d3;
    shape->dims[4] = 0;
}

static void set_shape2(tflm_shape *shape, int32_t d0, int32_t d1)
{
    shape->size = 2;
    shape->dims[0] = d0;
    shape->dims[1] = d1;
    shape->dims[2] = 0;
    shape->dims[3] = 0;
    shape->dims[4] = 0;
}

static void set_shape1(tflm_shape *shape, int32_t d0)
{
    set_shape2(shape, d0, 0);
    shape->size = 1;
}

static void conv_params_of(const tflm_layer *layer, tflm_conv_params *params)
{
    params->padding_values.width = (int16_t)layer->pad_width;
    params->padding_values.height = (int16_t)layer->pad_height;
    params->padding_values.width_offset = 0;
    params->padding_values.height_offset = 0;
    params->stride_width = (int16_t)layer->stride_width;
    params->stride_height = (int16_t)layer->stride_height;
    params->dilation_width_factor = 1;
    params->dilation_height_factor = 1;
    params->depth_multiplier = (int16_t)layer->depth_multiplier;
    params->input_offset = layer->input_offset;
    params->weights_offset = 0;
    params->output_offset = layer->output_offset;
    params->output_multiplier = 0;
    params->output_shift = 0;
    params->quantized_activation_min = layer->activation_min;
    params->quantized_activation_max = layer->activation_max;
}

static void pool_params_of(const tflm_layer *layer, tflm_pool_params *params)
{
    params->padding_values.width = (int16_t)layer->pad_width;
    params->padding_values.height = (int16_t)layer->pad_height;
    params->padding_values.width_offset = 0;
    params->padding_values.height_offset = 0;
    params->stride_height = layer->stride_height;
    params->stride_width = layer->stride_width;
    params->filter_height = layer->filter_height;
    params->filter_width = layer->filter_width;
    params->quantized_activation_min = layer->activation_min;
    params->quantized_activation_max = layer->activation_max;
}

int tflm_run_layer(const tflm_layer *layer, const int8_t *input, const int8_t *input2,
                   int8_t *output)
{
    tflm_shape input_shape, filter_shape, bias_shape, output_shape;
    set_shape4(&input_shape, 1, layer->input_height, layer->input_width, layer->input_depth);
    set_shape4(&output_shape, 1, layer->output_height, layer->output_width, layer->output_depth);
    set_shape1(&bias_shape, layer->output_depth);
    switch (layer->kind) {
    case TFLM_CONV:
    case TFLM_DEPTHWISE: {
        tflm_conv_params params;
        conv_params_of(layer, &params);
        if (layer->kind == TFLM_CONV) {
            set_shape4(&filter_shape, layer->output_depth, layer->filter_height,
                       layer->filter_width, layer->input_depth);
            tflm_conv_per_channel(&params, layer->multipliers, layer->shifts, &input_shape, input,
                                  &filter_shape, layer->filter, &bias_shape, layer->bias,
                                  &output_shape, output);
        } else {
            set_shape4(&filter_shape, 1, layer->filter_height, layer->filter_width,
                       layer->output_depth);
            tflm_depthwise_conv_per_channel(&params, layer->multipliers, layer->shifts,
                                            &input_shape, input, &filter_shape, layer->filter,
                                            &bias_shape, layer->bias, &output_shape, output);
        }
        return 0;
    }
    case TFLM_FULLY_CONNECTED:
    case TFLM_FULLY_CONNECTED_PER_CHANNEL: {
        tflm_fully_connected_params params;
        const int32_t features =
            layer->input_height * layer->input_width * layer->input_depth;
        const int32_t outputs =
            layer->output_height * layer->output_width * layer->output_depth;
        params.input_offset = layer->input_offset;
        params.weights_offset = layer->weights_offset;
        params.output_offset = layer->output_offset;
        params.output_multiplier = layer->output_multiplier;
        params.output_shift = layer->output_shift;
        params.quantized_activation_min = layer->activation_min;
        params.quantized_activation_max = layer->activation_max;
        set_shape2(&input_shape, 1, features);
        set_shape2(&filter_shape, outputs, features);
        set_shape2(&output_shape, 1, outputs);
        set_shape1(&bias_shape, outputs);
        if (layer->kind == TFLM_FULLY_CONNECTED) {
            tflm_fully_connected(&params, &input_shape, input, &filter_shape, layer->filter,
                                 &bias_shape, layer->bias, &output_shape, output);
        } else {
            tflm_fully_connected_per_channel(&params, layer->multipliers, layer->shifts,
                                             &input_shape, input, &filter_shape, layer->filter,
                                             &bias_shape, layer->bias, &output_shape, output);
        }
        return 0;
    }
    case TFLM_AVERAGE_POOL:
    case TFLM_MAX_POOL: {
        tflm_pool_params params;
        pool_params_of(layer, &params);
        if (layer->kind == TFLM_MAX_POOL) {
            tflm_max_pool(&params, &input_shape, input, &output_shape, output);
            return 0;
        }
        return tflm_average_pool(&params, &input_shape, input, &output_shape, output) ? 0 : 2;
    }
    case TFLM_ADD: {
        tflm_arithmetic_params params;
        params.input1_offset = layer->input_offset;
        params.input2_offset = layer->input2_offset;
        params.output_offset = layer->output_offset;
        params.output_multiplier = layer->output_multiplier;
        params.output_shift = layer->output_shift;
        params.left_shift = layer->left_shift;
        params.input1_multiplier = layer->input1_multiplier;
        params.input1_shift = layer->input1_shift;
        params.input2_multiplier = layer->input2_multiplier;
        params.input2_shift = layer->input2_shift;
        params.quantized_activation_min = layer->activation_min;
        params.quantized_activation_max = layer->activation_max;
        tflm_add(&params, &input_shape, input, &input_shape, input2, &output_shape, output);
        return 0;
    }
    default:
        return 1;
    }
}
