/* A CPU-variant library for ggml that scores above every real one and dies
 * at its first computation, as llama.cpp's AMX kernels did: it wraps a real
 * variant (REAL_VARIANT, a path given at compile time) and replaces its
 * backend's graph_compute with an illegal instruction (ud2 on x86-64, udf on
 * ARM). Loading it, scoring it and creating its backend all work, so only a
 * runtime that tests a variant before trusting it survives it. */
#include <dlfcn.h>
#include <stddef.h>

#include "ggml-backend-impl.h"

#ifndef REAL_VARIANT
#error "build with -DREAL_VARIANT='\"/path/to/libggml-cpu-x64.so\"'"
#endif

static ggml_backend_t (*real_init_backend)(ggml_backend_dev_t, const char *);

static enum ggml_status faulting_compute(ggml_backend_t backend, struct ggml_cgraph * graph) {
    (void) backend;
    (void) graph;
    __builtin_trap();
}

static ggml_backend_t faulting_init_backend(ggml_backend_dev_t dev, const char * params) {
    ggml_backend_t backend = real_init_backend(dev, params);
    if (backend) {
        backend->iface.graph_compute = faulting_compute;
    }
    return backend;
}

int ggml_backend_score(void) {
    return 1 << 30;
}

ggml_backend_reg_t ggml_backend_init(void) {
    void * real = dlopen(REAL_VARIANT, RTLD_NOW | RTLD_LOCAL);
    if (!real) {
        return NULL;
    }
    ggml_backend_reg_t (*init)(void) = (ggml_backend_reg_t (*)(void)) dlsym(real, "ggml_backend_init");
    ggml_backend_reg_t reg = init ? init() : NULL;
    if (!reg) {
        return NULL;
    }
    for (size_t i = 0; i < reg->iface.get_device_count(reg); i++) {
        ggml_backend_dev_t dev = reg->iface.get_device(reg, i);
        if (dev->iface.init_backend != faulting_init_backend) {
            real_init_backend = dev->iface.init_backend;
            dev->iface.init_backend = faulting_init_backend;
        }
    }
    return reg;
}
