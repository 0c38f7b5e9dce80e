/* edgeopt parity harness (not part of an exported library).
 *
 * Runs the generated model on samples read from a file and writes the outputs, so a test can
 * compare them with ONNX Runtime. Compiled by edgeopt.export.c.check_c with
 *   -include PREFIX.h -DEDGEOPT_TRACE -DEDGEOPT_RUN=PREFIX_run
 *   -DEDGEOPT_INPUT_IS_RAW=PREFIX_INPUT_IS_RAW -DEDGEOPT_INPUT_T=PREFIX_input_t
 *   -DEDGEOPT_OUTPUT_T=PREFIX_output_t -DEDGEOPT_INPUT_SIZE=... -DEDGEOPT_OUTPUT_SIZE=...
 *   and, unless the input is raw, -DEDGEOPT_QUANTIZE=PREFIX_quantize_input.
 * Usage: check INPUTS.bin OUTPUTS.bin [TRACE.bin]
 *   INPUTS.bin: samples of EDGEOPT_INPUT_SIZE values back to back: float32, quantized here by
 *   EDGEOPT_QUANTIZE, or (raw input) the raw uint8 / int8 values the model takes as they are;
 *   OUTPUTS.bin: one output per sample; TRACE.bin: (step int32, bytes int32, data) records.
 */
#include <stdio.h>

#include "edgeopt_kernels.h"

static FILE *trace_file = NULL;

void edgeopt_trace(int32_t step, const void *data, int32_t bytes)
{
    if (trace_file != NULL) {
        (void)fwrite(&step, sizeof step, 1, trace_file);
        (void)fwrite(&bytes, sizeof bytes, 1, trace_file);
        (void)fwrite(data, 1, (size_t)bytes, trace_file);
    }
}

static EDGEOPT_INPUT_T input[EDGEOPT_INPUT_SIZE];
static EDGEOPT_OUTPUT_T output[EDGEOPT_OUTPUT_SIZE];

#if EDGEOPT_INPUT_IS_RAW
/* The raw values go to the model as they are: the file holds what a sensor would give. */
static int read_sample(FILE *inputs)
{
    return fread(input, sizeof input[0], EDGEOPT_INPUT_SIZE, inputs) == EDGEOPT_INPUT_SIZE;
}
#else
static float values[EDGEOPT_INPUT_SIZE];

static int read_sample(FILE *inputs)
{
    if (fread(values, sizeof values[0], EDGEOPT_INPUT_SIZE, inputs) != EDGEOPT_INPUT_SIZE) {
        return 0;
    }
    EDGEOPT_QUANTIZE(values, input);
    return 1;
}
#endif

int main(int argc, char **argv)
{
    FILE *inputs;
    FILE *outputs;
    if (argc < 3) {
        (void)fputs("usage: check INPUTS.bin OUTPUTS.bin [TRACE.bin]\n", stderr);
        return 2;
    }
    inputs = fopen(argv[1], "rb");
    outputs = fopen(argv[2], "wb");
    if (inputs == NULL || outputs == NULL) {
        (void)fputs("check: cannot open the input or output file\n", stderr);
        return 2;
    }
    if (argc > 3) {
        trace_file = fopen(argv[3], "wb");
    }
    while (read_sample(inputs)) {
        if (EDGEOPT_RUN(input, output) != 0) {
            return 3;
        }
        (void)fwrite(output, sizeof output[0], EDGEOPT_OUTPUT_SIZE, outputs);
    }
    (void)fclose(inputs);
    if (trace_file != NULL) {
        (void)fclose(trace_file);
    }
    return fclose(outputs) == 0 ? 0 : 4;
}
