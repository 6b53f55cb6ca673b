// cuda_check.h: CUDA_CHECK for the GPU self-tests (kernels/tests/*_test.cu): a failed runtime call prints the file,
// line, call and error, and exits with status 2.
#pragma once
#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>

#define CUDA_CHECK(call)                                                                         \
    do {                                                                                         \
        cudaError_t err_ = (call);                                                               \
        if (err_ != cudaSuccess) {                                                               \
            std::fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call,       \
                         cudaGetErrorName(err_), cudaGetErrorString(err_));                      \
            std::exit(2);                                                                        \
        }                                                                                        \
    } while (0)
