/* An implementation of the integer arithmetic and loop structure of TensorFlow Lite Micro's
 * reference int8 kernels, written for edgeopt from their documented behaviour (the TFLite 8-bit
 * quantization specification, https://www.tensorflow.org/lite/performance/quantization_spec;
 * Jacob et al. 2018, https://arxiv.org/abs/1712.05877) to count instructions beside edgeopt's
 * kernels; it contains no TFLM source. Checked byte for byte against TFLM's interpreter by
 * tests/measure/test_tflm_reference.py. Not part of the edgeopt package.
 *
 * Tensors are NHWC; convolution filters are [out][kh][kw][in], depthwise filters
 * [1][kh][kw][channels * multiplier], fully connected filters [out][in]. A requantization
 * multiplier m with shift s stands for the real factor m * 2^(s - 31), m in [2^30, 2^31).
 */
#ifndef TFLM_REFERENCE_H
#define TFLM_REFERENCE_H

#include <stdint.h>

/* A tensor shape: `size` dimensions (at most 5) in `dims`. */
typedef struct {
    int32_t size;
    int32_t dims[5];
} tflm_shape;

/* Leading padding rows (height) and columns (width); the offsets are kept for layout only. */
typedef struct {
    int16_t width;
    int16_t height;
    int16_t width_offset;
    int16_t height_offset;
} tflm_padding_values;

/* Convolution and depthwise convolution parameters (depth_multiplier: depthwise only). */
typedef struct {
    tflm_padding_values padding_values;
    int16_t stride_width;
    int16_t stride_height;
    int16_t dilation_width_factor;
    int16_t dilation_height_factor;
    int16_t depth_multiplier;
    int32_t input_offset;  /* minus the input zero point */
    int32_t weights_offset;
    int32_t output_offset; /* the output zero point */
    int32_t output_multiplier;
    int output_shift;
    int32_t quantized_activation_min;
    int32_t quantized_activation_max;
} tflm_conv_params;

/* Fully connected parameters; the multiplier and shift are per tensor. */
typedef struct {
    int32_t input_offset;
    int32_t weights_offset; /* minus the weights zero point */
    int32_t output_offset;
    int32_t output_multiplier;
    int output_shift;
    int32_t quantized_activation_min;
    int32_t quantized_activation_max;
} tflm_fully_connected_params;

/* Average and max pooling parameters. */
typedef struct {
    tflm_padding_values padding_values;
    int stride_height;
    int stride_width;
    int filter_height;
    int filter_width;
    int32_t quantized_activation_min;
    int32_t quantized_activation_max;
} tflm_pool_params;

/* Elementwise int8 add: both inputs shifted left by left_shift, rescaled to a common scale,
 * summed, then rescaled to the output. */
typedef struct {
    int32_t input1_offset;
    int32_t input2_offset;
    int32_t output_offset;
    int32_t output_multiplier;
    int output_shift;
    int left_shift;
    int32_t input1_multiplier;
    int input1_shift;
    int32_t input2_multiplier;
    int input2_shift;
    int32_t quantized_activation_min;
    int32_t quantized_activation_max;
} tflm_arithmetic_params;

/* x * multiplier * 2^(shift - 31), rounded as the quantization specification prescribes. */
int32_t tflm_multiply_by_quantized_multiplier(int32_t x, int32_t quantized_multiplier, int shift);

void tflm_conv_per_channel(const tflm_conv_params *params, const int32_t *output_multiplier,
                           const int32_t *output_shift, const tflm_shape *input_shape,
                           const int8_t *input_data, const tflm_shape *filter_shape,
                           const int8_t *filter_data, const tflm_shape *bias_shape,
                           const int32_t *bias_data, const tflm_shape *output_shape,
                           int8_t *output_data);
void tflm_depthwise_conv_per_channel(const tflm_conv_params *params,
                                     const int32_t *output_multiplier,
                                     const int32_t *output_shift, const tflm_shape *input_shape,
                                     const int8_t *input_data, const tflm_shape *filter_shape,
                                     const int8_t *filter_data, const tflm_shape *bias_shape,
                                     const int32_t *bias_data, const tflm_shape *output_shape,
                                     int8_t *output_data);
void tflm_fully_connected_per_channel(const tflm_fully_connected_params *params,
                                      const int32_t *output_multiplier,
                                      const int32_t *output_shift,
                                      const tflm_shape *input_shape, const int8_t *input_data,
                                      const tflm_shape *filter_shape, const int8_t *filter_data,
                                      const tflm_shape *bias_shape, const int32_t *bias_data,
                                      const tflm_shape *output_shape, int8_t *output_data);
void tflm_fully_connected(const tflm_fully_connected_params *params,
                          const tflm_shape *input_shape, const int8_t *input_data,
                          const tflm_shape *filter_shape, const int8_t *filter_data,
                          const tflm_shape *bias_shape, const int32_t *bias_data,
                          const tflm_shape *output_shape, int8_t *output_data);
/* Returns 1, or 0 where a window holds no input element. */
int tflm_average_pool(const tflm_pool_params *params, const tflm_shape *input_shape,
                      const int8_t *input_data, const tflm_shape *output_shape,
                      int8_t *output_data);
void tflm_max_pool(const tflm_pool_params *params, const tflm_shape *input_shape,
                   const int8_t *input_data, const tflm_shape *output_shape, int8_t *output_data);
void tflm_add(const tflm_arithmetic_params *params, const tflm_shape *input1_shape,
              const int8_t *input1_data, const tflm_shape *input2_shape,
              const int8_t *input2_data, const tflm_shape *output_shape, int8_t *output_data);

/* One layer for tflm_run_layer(): its kind, NHWC sizes (batch 1), integer parameters and
 * constant arrays. tflm_run_layer() fills the shapes and params structs from it and calls the
 * kernel of its kind; the instruction count covers that setup and the kernel. */
enum {
    TFLM_CONV = 1,
    TFLM_DEPTHWISE = 2,
    TFLM_FULLY_CONNECTED = 3, /* per-tensor multiplier, weights_offset applied */
    TFLM_FULLY_CONNECTED_PER_CHANNEL = 4,
    TFLM_AVERAGE_POOL = 5,
    TFLM_MAX_POOL = 6,
    TFLM_ADD = 7
};

/* Field order matters: benchmarks/tflm_reference/port.py mirrors it with ctypes. */
typedef struct {
    int32_t kind;
    int32_t input_height, input_width, input_depth;
    int32_t output_height, output_width, output_depth;
    int32_t filter_height, filter_width;
    int32_t stride_height, stride_width;
    int32_t pad_height, pad_width;
    int32_t depth_multiplier;
    int32_t input_offset, input2_offset, weights_offset, output_offset;
    int32_t activation_min, activation_max;
    int32_t output_multiplier, output_shift; /* per tensor: fully connected, add */
    int32_t left_shift, input1_multiplier, input1_shift, input2_multiplier, input2_shift;
    const int8_t *filter;
    const int32_t *bias;
    const int32_t *multipliers; /* per output channel */
    const int32_t *shifts;      /* per output channel */
} tflm_layer;

/* Runs one layer; returns 0 on success, nonzero for an unknown kind or an empty pool window. */
int tflm_run_layer(const tflm_layer *layer, const int8_t *input, const int8_t *input2,
                   int8_t *output);

#endif /* TFLM_REFERENCE_H */
