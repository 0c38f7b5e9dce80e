/* edgeopt Cortex-M instruction-count harness (not part of an exported library).
 *
 * A bare-metal image for QEMU's MPS2/MPS3 boards (mps2-an386 Cortex-M4, mps2-an500 Cortex-M7,
 * mps2-an505 Cortex-M33, mps3-an547 Cortex-M55): vector table, reset handler, then every
 * baked-in sample through the model, with the fine counter (CMSDK APB timer 0; on the SSE-300
 * of mps3-an547, which has no CMSDK timer on its main clock, the System Counter) read before
 * the call, after each layer (the library's EDGEOPT_LAYER_END hook, see
 * edgeopt_cortexm_hook.h) and after the return. Under `qemu-system-arm -icount shift=N` the
 * counter counts virtual time, which advances 2^N ns per executed instruction, so its ticks
 * convert exactly to instructions executed. Results go out through Arm semihosting (SYS_WRITE0
 * lines, then SYS_EXIT). Written by edgeopt.measure.cortexm, compiled with
 *   -include PREFIX.h -DEDGEOPT_RUN=PREFIX_run -DEDGEOPT_INPUT_T=... -DEDGEOPT_OUTPUT_T=...
 *   -DEDGEOPT_INPUT_SIZE=... -DEDGEOPT_OUTPUT_SIZE=... -DEDGEOPT_INPUT_IS_RAW=...
 *   -DEDGEOPT_LAYERS=... -DEDGEOPT_SYSTEM_COUNTER=0 -DEDGEOPT_TIMER_BASE=...
 *   -DEDGEOPT_DUALTIMER_BASE=... (or -DEDGEOPT_SYSTEM_COUNTER=1 -DEDGEOPT_COUNTER_BASE=...)
 *   -DEDGEOPT_SAMPLES=... -DEDGEOPT_SAMPLE_T=float (raw input: the input type) and, unless the
 *   input is raw, -DEDGEOPT_QUANTIZE=PREFIX_quantize_input; the samples come from
 *   edgeopt_samples.c.
 *
 * Output lines: "S i" per sample, "C c0 c1" the coarse counter (clock / 256) before and after,
 * "L t0 t1 ... tN+1" the fine counter's values, "O hex" the output bytes; "E" at the end. Both
 * are printed counting down (the System Counter's values negated). A fault prints "F n" and
 * exits with an error.
 */
#include <stddef.h>
#include <stdint.h>

#if EDGEOPT_SYSTEM_COUNTER
/* SSE-300 System Counter, control frame (Arm 101773, Corstone SSE-300 TRM; QEMU's
 * hw/timer/sse-counter.c): CNTCR (bit 0 enable), CNTCV a 64-bit count up at MAINCLK. */
#define COUNTER_CNTCR (*(volatile uint32_t *)(EDGEOPT_COUNTER_BASE + 0x0u))
#define COUNTER_LO (*(volatile uint32_t *)(EDGEOPT_COUNTER_BASE + 0x8u))
#define COUNTER_HI (*(volatile uint32_t *)(EDGEOPT_COUNTER_BASE + 0xcu))
#define TIMER_VALUE COUNTER_LO
#define DOWNWARD(value) (0u - (value))
#else
#define TIMER_CTRL (*(volatile uint32_t *)(EDGEOPT_TIMER_BASE + 0x0u))
#define TIMER_VALUE (*(volatile uint32_t *)(EDGEOPT_TIMER_BASE + 0x4u))
#define TIMER_RELOAD (*(volatile uint32_t *)(EDGEOPT_TIMER_BASE + 0x8u))
#define DUAL_LOAD (*(volatile uint32_t *)(EDGEOPT_DUALTIMER_BASE + 0x0u))
#define DUAL_VALUE (*(volatile uint32_t *)(EDGEOPT_DUALTIMER_BASE + 0x4u))
#define DUAL_CONTROL (*(volatile uint32_t *)(EDGEOPT_DUALTIMER_BASE + 0x8u))
#define DOWNWARD(value) (value)
#endif
#define CPACR (*(volatile uint32_t *)0xE000ED88u)

extern const EDGEOPT_SAMPLE_T edgeopt_samples[EDGEOPT_SAMPLES][EDGEOPT_INPUT_SIZE];
volatile uint32_t edgeopt_stamps[EDGEOPT_LAYERS + 2];

static EDGEOPT_OUTPUT_T output[EDGEOPT_OUTPUT_SIZE];
#if !EDGEOPT_INPUT_IS_RAW
static EDGEOPT_INPUT_T quantized[EDGEOPT_INPUT_SIZE];
#endif

/* Arm semihosting: BKPT 0xAB with the operation in r0 and its argument in r1. */
static uint32_t semihost(uint32_t operation, const void *argument)
{
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void write_text(const char *text)
{
    (void)semihost(0x04u, text); /* SYS_WRITE0 */
}

static void leave(uint32_t code)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (0x20026): QEMU exits with status 0;
     * ADP_Stopped_RunTimeErrorUnknown (0x20023): QEMU exits with status 1. */
    (void)semihost(0x18u, (const void *)(uintptr_t)(code == 0u ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

static char line[160];
static size_t used;

static void flush(void)
{
    line[used] = '\0';
    write_text(line);
    used = 0;
}

static void put_char(char c)
{
    if (used + 1 >= sizeof line) {
        flush();
    }
    line[used++] = c;
}

static void put_number(uint32_t value)
{
    char digits[12];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    put_char(' ');
    while (count > 0) {
        put_char(digits[--count]);
    }
}

static void put_bytes(const void *data, size_t bytes)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    put_char(' ');
    for (i = 0; i < bytes; i++) {
        put_char(hex[p[i] >> 4]);
        put_char(hex[p[i] & 15u]);
    }
}

/* The coarse count, clock / 256. */
static uint32_t coarse_value(void)
{
#if EDGEOPT_SYSTEM_COUNTER
    /* bits 8..39 of the 64-bit count; the high word read again if the low one wrapped */
    uint32_t high, low;
    do {
        high = COUNTER_HI;
        low = COUNTER_LO;
    } while (high != COUNTER_HI);
    return (high << 24) | (low >> 8);
#else
    return DUAL_VALUE;
#endif
}

static void run_samples(void)
{
    uint32_t s, i;
    uint32_t coarse_before, coarse_after;
    for (s = 0; s < EDGEOPT_SAMPLES; s++) {
#if EDGEOPT_INPUT_IS_RAW
        const EDGEOPT_INPUT_T *input = edgeopt_samples[s];
#else
        const EDGEOPT_INPUT_T *input = quantized;
        EDGEOPT_QUANTIZE(edgeopt_samples[s], quantized);
#endif
        coarse_before = coarse_value();
        edgeopt_stamps[0] = TIMER_VALUE;
        if (EDGEOPT_RUN(input, output) != 0) {
            leave(3u);
        }
        edgeopt_stamps[EDGEOPT_LAYERS + 1] = TIMER_VALUE;
        coarse_after = coarse_value();
        put_char('S');
        put_number(s);
        put_char('\n');
        put_char('C');
        put_number(DOWNWARD(coarse_before));
        put_number(DOWNWARD(coarse_after));
        put_char('\n');
        put_char('L');
        for (i = 0; i < EDGEOPT_LAYERS + 2; i++) {
            put_number(DOWNWARD(edgeopt_stamps[i]));
        }
        put_char('\n');
        put_char('O');
        put_bytes(output, sizeof output);
        put_char('\n');
        flush();
    }
}

int main(void);

int main(void)
{
#if EDGEOPT_SYSTEM_COUNTER
    /* count from 0, unscaled: one step per MAINCLK tick */
    COUNTER_CNTCR = 0u;
    COUNTER_LO = 0u;
    COUNTER_HI = 0u;
    COUNTER_CNTCR = 1u;
#else
    /* CMSDK APB timer (Cortex-M System Design Kit TRM, Arm DDI 0479): count down from
     * 2^32 - 1 and wrap. */
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = 1u;
    /* CMSDK dual timer 1 (Arm DDI 0479; control: bit 7 enable, bits 3:2 prescale, bit 1
     * 32-bit): free-running, 32-bit, clock / 256: a coarse count that tells a wrap of timer 0
     * from a short interval. */
    DUAL_LOAD = 0xFFFFFFFFu;
    DUAL_CONTROL = 0x80u | (2u << 2) | 0x02u;
#endif
    run_samples();
    write_text("E\n");
    leave(0u);
    return 0;
}

/* Startup: the section bounds come from the linker script, which also places the initial
 * stack pointer in front of this table. */
extern uint32_t edgeopt_bss_start, edgeopt_bss_end;
void edgeopt_reset(void);
void edgeopt_fault(void);

void edgeopt_reset(void)
{
    uint32_t *p;
    for (p = &edgeopt_bss_start; p < &edgeopt_bss_end; p++) {
        *p = 0u;
    }
    /* Full access to the FPU (coprocessors 10 and 11; on the M55 also MVE) before any float or
     * vector instruction. */
    CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    (void)main();
    leave(0u);
}

void edgeopt_fault(void)
{
    write_text("F 1\n");
    leave(1u);
}

/* Vector table after the stack pointer: reset, then NMI..SysTick all to the fault handler. */
__attribute__((section(".vectors"), used)) static void (*const vectors[15])(void) = {
    edgeopt_reset,
    edgeopt_fault,
    edgeopt_fault,
    edgeopt_fault,
    edgeopt_fault,
    edgeopt_fault,
    NULL,
    NULL,
    NULL,
    NULL,
    edgeopt_fault,
    edgeopt_fault,
    NULL,
    edgeopt_fault,
    edgeopt_fault,
};
