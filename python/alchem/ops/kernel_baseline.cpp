// The kernel for any CPU of the architecture: 16-byte vectors (SSE2 on x86-64, NEON on arm64).
#define ALCHEM_KERNEL_VARIANT baseline
#define ALCHEM_KERNEL_NAME "baseline"
#include "kernel.h"
