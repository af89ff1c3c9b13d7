/* Startup for the Arm MPS2 AN386 (Cortex-M4F) under QEMU (`qemu-system-arm -machine mps2-an386`), used by
 * `make -C micro test-m4` to run the host unit tests (tests/test_sched.c) on an emulated Cortex-M4.
 *
 * The core resets by loading SP and PC from the vector table at address 0 (m4/mps2_an386.ld). Reset_Handler
 * turns on the FPU (the code is built with -mfloat-abi=hard: any FP instruction before that would fault),
 * copies .data from its load image, clears .bss, opens the semihosting stdin/stdout/stderr (newlib's librdimon,
 * linked by --specs=rdimon.specs), runs the constructors, calls main and passes its return value to exit(),
 * i.e. to the semihosting SYS_EXIT_EXTENDED call, which makes QEMU exit with that status.
 *
 * It does what newlib's _start (rdimon-crt0) does, except that it keeps the stack of the linker script: _start
 * would move SP to wherever the host's SYS_HEAPINFO answer says (QEMU: the top of the largest RAM, the 16 MiB
 * PSRAM at 0x21000000), so the stack size and placement would depend on the emulator. The heap (newlib's
 * _sbrk) grows from `end` up to the stack pointer.
 *
 * A fault prints its name over semihosting and exits with status 3, so a crash fails the run instead of
 * hanging until the timeout. */
#include <stdint.h>

extern uint32_t __data_start__[], __data_end__[], __data_load__[];
extern uint32_t __bss_start__[], __bss_end__[];
extern uint32_t __StackTop[];

extern int main(void);
extern void initialise_monitor_handles(void); /* librdimon */
extern void __libc_init_array(void);          /* newlib: preinit/init arrays and _init */
extern void exit(int status) __attribute__((noreturn));
void Reset_Handler(void) __attribute__((noreturn));

/* Semihosting call (Armv7-M: BKPT 0xAB; op in r0, argument in r1, result in r0). */
static uint32_t semihost(uint32_t op, const void *arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

#define SYS_WRITE0 0x04u
#define SYS_EXIT 0x18u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static void fault(const char *what) __attribute__((noreturn));
static void fault(const char *what) {
  /* SYS_EXIT_EXTENDED takes {reason, status}; QEMU exits with the status. */
  uint32_t block[2];
  block[0] = ADP_STOPPED_APPLICATION_EXIT;
  block[1] = 3u;
  semihost(SYS_WRITE0, "m4 startup: ");
  semihost(SYS_WRITE0, what);
  semihost(SYS_WRITE0, "\n");
  semihost(SYS_EXIT_EXTENDED, block);
  /* a host without SYS_EXIT_EXTENDED: plain SYS_EXIT with a reason other than ApplicationExit (status 1) */
  semihost(SYS_EXIT, (const void *)0x20023u); /* ADP_Stopped_RunTimeErrorUnknown */
  for (;;) {
  }
}

static void NMI_Handler(void) { fault("NMI"); }
static void HardFault_Handler(void) { fault("HardFault"); }
static void MemManage_Handler(void) { fault("MemManage fault"); }
static void BusFault_Handler(void) { fault("BusFault"); }
static void UsageFault_Handler(void) { fault("UsageFault"); }
static void Default_Handler(void) { fault("unexpected exception or interrupt"); }

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CCR (*(volatile uint32_t *)0xE000ED14u)

void Reset_Handler(void) {
  uint32_t *src, *dst;
  /* CP10 and CP11 (the FPU) full access, then let the change take effect before any FP instruction */
  SCB_CPACR |= (0xFu << 20);
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  /* MemManage, BusFault and UsageFault report as themselves rather than escalating to HardFault; trap integer
   * division by zero (UsageFault) instead of returning 0 */
  SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
  SCB_CCR |= (1u << 4);
  for (src = __data_load__, dst = __data_start__; dst < __data_end__;) *dst++ = *src++;
  for (dst = __bss_start__; dst < __bss_end__;) *dst++ = 0u;
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}

/* Cortex-M4 system exceptions; the AN386 peripherals' interrupts stay disabled (no IRQ entries needed). */
typedef void (*vector)(void);
__attribute__((section(".vectors"), used)) static const vector g_vectors[16] = {
    (vector)(uintptr_t)__StackTop, /* initial main stack pointer */
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,          /* reserved */
    Default_Handler,     /* SVCall */
    Default_Handler,     /* DebugMonitor */
    0,                   /* reserved */
    Default_Handler,     /* PendSV */
    Default_Handler,     /* SysTick */
};
