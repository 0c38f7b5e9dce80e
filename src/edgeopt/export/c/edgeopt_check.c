/* edgeopt parity harness (not part of an exported library).
 *
 * Runs the generated model on float samples read from a file and writes the outputs, so a
 * test can compare them with ONNX Runtime. Compiled by edgeopt.export.c.check_c with
 *   -include PREFIX.h -DEDGEOPT_TRACE -DEDGEOPT_RUN=PREFIX_run
 *   -DEDGEOPT_QUANTIZE=PREFIX_quantize_input -DEDGEOPT_INPUT_T=PREFIX_input_t
 *   -DEDGEOPT_OUTPUT_T=PREFIX_output_t -DEDGEOPT_INPUT_SIZE=... -DEDGEOPT_OUTPUT_SIZE=...
 * Usage: check INPUTS.f32 OUTPUTS.bin [TRACE.bin]
 *   INPUTS.f32: samples of EDGEOPT_INPUT_SIZE float32 values, back to back;
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

static float values[EDGEOPT_INPUT_SIZE];
static EDGEOPT_INPUT_T input[EDGEOPT_INPUT_SIZE];
static EDGEOPT_OUTPUT_T output[EDGEOPT_OUTPUT_SIZE];

int main(int argc, char **argv)
{
    FILE *inputs;
    FILE *outputs;
    if (argc < 3) {
        (void)fputs("usage: check INPUTS.f32 OUTPUTS.bin [TRACE.bin]\n", stderr);
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
    while (fread(values, sizeof values[0], EDGEOPT_INPUT_SIZE, inputs) == EDGEOPT_INPUT_SIZE) {
        EDGEOPT_QUANTIZE(values, input);
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
