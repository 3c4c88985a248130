/* qlane's bare-metal runtime for QEMU's mps3-an547 board (Cortex-M55), part of
 * qlane.codegen.qemu (linked with qemu_m55/link.ld into every image build_m55 makes).
 *
 * - the vector table (initial stack pointer, reset, and every fault reported then ended);
 * - reset: FPU and MVE enabled, .bss zeroed, main() called, its return value the exit code;
 * - semihosting (bkpt 0xAB): qlane_semihost_write0() prints a string on QEMU's console,
 *   qlane_exit() ends QEMU with an exit code (SYS_EXIT_EXTENDED);
 * memcpy, memmove, memset and memcmp come from the generated projects' runtime,
 * templates/qlane_rt.c, linked beside it (qlane.codegen.qemu.build_m55).
 *
 * A program declares what it uses:
 *     void qlane_semihost_write0(const char *s);
 *     void qlane_exit(int code);
 */
#include <stddef.h>
#include <stdint.h>

#define QLANE_FAULT_EXIT 254 /* exit code of a fault; qlane.codegen.qemu.FAULT_EXIT */

extern uint32_t __qlane_bss_start, __qlane_bss_end, __qlane_stack_top;
int main(void);
void Reset_Handler(void);
void qlane_fault_handler(void);
void qlane_fault_report(const uint32_t *frame, uint32_t ipsr);
void qlane_semihost_write0(const char *s);
void qlane_exit(int code) __attribute__((noreturn));

typedef void (*qlane_vector)(void);

__attribute__((section(".qlane_vectors"), used))
const qlane_vector qlane_vectors[16] = {
    (qlane_vector)(uintptr_t)&__qlane_stack_top, Reset_Handler,
    qlane_fault_handler, qlane_fault_handler, qlane_fault_handler, qlane_fault_handler,
    qlane_fault_handler, qlane_fault_handler, 0, 0, 0, qlane_fault_handler,
    qlane_fault_handler, 0, qlane_fault_handler, qlane_fault_handler,
};

/* ---- semihosting ---- */

static int qlane_semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void qlane_semihost_write0(const char *s)
{
    (void)qlane_semihost(0x04, s); /* SYS_WRITE0 */
}

void qlane_exit(int code)
{
    /* SYS_EXIT_EXTENDED: {ADP_Stopped_ApplicationExit, code} */
    const uint32_t block[2] = {0x20026u, (uint32_t)code};
    (void)qlane_semihost(0x20, block);
    for (;;) {
    }
}

/* ---- reset and faults ---- */

void Reset_Handler(void)
{
    /* CPACR: full access to CP10 and CP11 (FPU and MVE) before any of their instructions */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (volatile uint32_t *p = &__qlane_bss_start; p < &__qlane_bss_end; ++p) {
        *p = 0u;
    }
    qlane_exit(main());
}

/* The stacked frame (r0-r3, r12, lr, pc, xpsr) is on the stack the exception came from. */
__attribute__((naked)) void qlane_fault_handler(void)
{
    __asm__ volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r0, msp\n\t"
        "mrsne r0, psp\n\t"
        "mrs r1, ipsr\n\t"
        "b qlane_fault_report\n\t");
}

void qlane_fault_report(const uint32_t *frame, uint32_t ipsr)
{
    static const char *const names[16] = {
        "exception 0", "reset", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault",
        "SecureFault", "exception 8", "exception 9", "exception 10", "SVCall", "DebugMonitor",
        "exception 13", "PendSV", "SysTick",
    };
    static const char hex[] = "0123456789abcdef";
    char pc[11] = "0x";
    uint32_t value = frame[6];
    for (int i = 0; i < 8; ++i) {
        pc[2 + i] = hex[(value >> (28 - 4 * i)) & 0xFu];
    }
    pc[10] = '\0';
    qlane_semihost_write0("\nqlane: fault: ");
    qlane_semihost_write0((ipsr & 0x1FFu) < 16u ? names[ipsr & 0xFu] : "interrupt");
    qlane_semihost_write0(" at pc ");
    qlane_semihost_write0(pc);
    qlane_semihost_write0("\n");
    qlane_exit(QLANE_FAULT_EXIT);
}
