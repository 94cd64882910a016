// The kernel for x86-64-v3 (AVX2 + FMA), compiled with -march=x86-64-v3: 32-byte vectors.
#define ALCHEM_KERNEL_VARIANT x86_64_v3
#define ALCHEM_KERNEL_NAME "x86-64-v3"
#include "kernel.h"
