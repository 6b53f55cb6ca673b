// cflora_test.cu: self-test for kernels/cflora.cu on a GPU machine (built by CMake, run by ctest).
// CPU reference (double accumulation) vs rellax_cflora_down + rellax_cflora_gemm over several shapes (ragged 64-wide
// tiles, K tiles straddling d_in, r up to 128) and weight dtypes; exits non-zero on any mismatch or CUDA error.
// The same shapes run on the CPU in kernels/tests/sim/cflora_sim.cpp (no GPU needed).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "../cflora.cu"

#define CUDA_CHECK(call)                                                                         \
    do {                                                                                         \
        cudaError_t err_ = (call);                                                               \
        if (err_ != cudaSuccess) {                                                               \
            std::fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call,       \
                         cudaGetErrorName(err_), cudaGetErrorString(err_));                      \
            std::exit(2);                                                                        \
        }                                                                                        \
    } while (0)

static unsigned g_state = 12345u;

static float uniform() {  // xorshift, deterministic, in [-1, 1)
    g_state ^= g_state << 13;
    g_state ^= g_state >> 17;
    g_state ^= g_state << 5;
    return (float)(g_state & 0xffffff) / (float)0x800000 - 1.0f;
}

static float bits_to_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

static unsigned float_to_bits(float f) {
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// IEEE binary16 bits -> float on the host (exact).
static float half_to_float(unsigned short h) {
    const unsigned sign = ((unsigned)h & 0x8000u) << 16, em = (unsigned)h & 0x7fffu;
    unsigned magnitude;
    if (em >= 0x7c00u) magnitude = 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x0400u) magnitude = (em << 13) + ((127u - 15u) << 23);
    else magnitude = float_to_bits((float)em * 5.9604644775390625e-8f);
    return bits_to_float(sign | magnitude);
}

// A weight in storage `dtype`: bytes to upload and the exact float values they hold.
struct Weight {
    int dtype;
    std::vector<float> f32;
    std::vector<unsigned short> bits;
    std::vector<float> values;
    const void* host() const { return dtype == RELLAX_CFLORA_DTYPE_F32 ? (const void*)f32.data() : (const void*)bits.data(); }
    size_t bytes() const { return dtype == RELLAX_CFLORA_DTYPE_F32 ? f32.size() * 4 : bits.size() * 2; }
};

static Weight make_weight(int dtype, size_t n) {
    Weight w{dtype, {}, {}, {}};
    for (size_t i = 0; i < n; i++) {
        const float v = uniform();
        if (dtype == RELLAX_CFLORA_DTYPE_F32) {
            w.f32.push_back(v);
            w.values.push_back(v);
        } else if (dtype == RELLAX_CFLORA_DTYPE_BF16) {
            const unsigned short b = (unsigned short)(float_to_bits(v) >> 16);
            w.bits.push_back(b);
            w.values.push_back(bits_to_float((unsigned)b << 16));
        } else {
            unsigned short h = (unsigned short)(g_state & 0x83ffu);
            h |= (unsigned short)(((g_state >> 10) % 16) << 10);
            uniform();
            w.bits.push_back(h);
            w.values.push_back(half_to_float(h));
        }
    }
    return w;
}

template <class T>
static T* upload(const void* host, size_t bytes) {
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, bytes == 0 ? 4 : bytes));
    if (bytes) CUDA_CHECK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return (T*)d;
}

static int check(int T, int S, int d_in, int d_out, int r, int w0_dtype, int ab_dtype, bool with_bias, float scale) {
    std::vector<float> x((size_t)T * d_in), g((size_t)S * r * r), bias(with_bias ? d_out : 0);
    std::vector<int> row_sample(T);
    for (auto& v : x) v = uniform();
    for (auto& v : g) v = uniform();
    for (auto& v : bias) v = uniform();
    for (int t = 0; t < T; t++) {
        row_sample[t] = (int)((g_state >> 3) % (unsigned)S);
        uniform();
    }
    const Weight w0 = make_weight(w0_dtype, (size_t)d_out * d_in);
    const Weight a = make_weight(ab_dtype, (size_t)r * d_in);
    const Weight b = make_weight(ab_dtype, (size_t)d_out * r);

    float* d_x = upload<float>(x.data(), x.size() * 4);
    float* d_g = upload<float>(g.data(), g.size() * 4);
    float* d_bias = with_bias ? upload<float>(bias.data(), bias.size() * 4) : nullptr;
    int* d_rows = upload<int>(row_sample.data(), row_sample.size() * 4);
    void* d_w0 = upload<void>(w0.host(), w0.bytes());
    void* d_a = upload<void>(a.host(), a.bytes());
    void* d_b = upload<void>(b.host(), b.bytes());
    float *d_v, *d_y;
    CUDA_CHECK(cudaMalloc(&d_v, (size_t)T * r * 4));
    CUDA_CHECK(cudaMalloc(&d_y, (size_t)T * d_out * 4));

    rellax_cflora_down<<<T, 256>>>(d_x, d_a, ab_dtype, d_g, d_rows, d_v, T, d_in, r, scale);
    CUDA_CHECK(cudaGetLastError());
    const dim3 grid((d_out + 63) / 64, (T + 63) / 64);
    rellax_cflora_gemm<<<grid, 256>>>(d_x, d_v, d_w0, w0_dtype, d_b, ab_dtype, d_bias, d_y, T, d_out, d_in, r);
    CUDA_CHECK(cudaGetLastError());
    std::vector<float> y((size_t)T * d_out);
    CUDA_CHECK(cudaMemcpy(y.data(), d_y, y.size() * 4, cudaMemcpyDeviceToHost));
    for (void* p : {(void*)d_x, (void*)d_g, (void*)d_bias, (void*)d_rows, d_w0, d_a, d_b, (void*)d_v, (void*)d_y})
        if (p) CUDA_CHECK(cudaFree(p));

    int bad = 0;
    std::vector<double> u(r), vv(r);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < r; i++) {
            double acc = 0;
            for (int c = 0; c < d_in; c++) acc += (double)a.values[(size_t)i * d_in + c] * x[(size_t)t * d_in + c];
            u[i] = acc;
        }
        const float* gs = g.data() + (size_t)row_sample[t] * r * r;
        for (int j = 0; j < r; j++) {
            double acc = 0;
            for (int i = 0; i < r; i++) acc += u[i] * gs[i * r + j];
            vv[j] = acc;
        }
        for (int o = 0; o < d_out; o++) {
            double acc = with_bias ? bias[o] : 0.0;
            for (int c = 0; c < d_in; c++) acc += (double)w0.values[(size_t)o * d_in + c] * x[(size_t)t * d_in + c];
            double ad = 0;
            for (int j = 0; j < r; j++) ad += (double)b.values[(size_t)o * r + j] * vv[j];
            const double want = acc + scale * ad, got = y[(size_t)t * d_out + o];
            if (!(std::fabs(got - want) <= 1e-4 + 1e-4 * std::fabs(want))) {
                if (bad < 5) std::fprintf(stderr, "  mismatch at t=%d o=%d: gpu %.8g cpu %.8g\n", t, o, got, want);
                bad++;
            }
        }
    }
    std::printf("cflora T=%d S=%d d_in=%d d_out=%d r=%d w0=%d ab=%d bias=%d: %s\n", T, S, d_in, d_out, r, w0_dtype,
                ab_dtype, (int)with_bias, bad ? "FAIL" : "ok");
    return bad;
}

int main() {
    int failures = 0;
    failures += check(1, 1, 1, 1, 1, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, false, 1.0f) != 0;
    failures += check(5, 2, 37, 45, 8, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, true, 2.0f) != 0;
    failures += check(70, 3, 100, 130, 16, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F16, true, 1.0f) != 0;
    failures += check(65, 4, 48, 64, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, false, 2.0f) != 0;
    failures += check(9, 3, 33, 20, 40, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_F16, true, 0.5f) != 0;
    failures += check(3, 2, 20, 70, 128, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F32, false, 0.25f) != 0;
    failures += check(200, 8, 1024, 768, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, true, 2.0f) != 0;
    if (failures) {
        std::fprintf(stderr, "cflora_test: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("cflora_test: all passed\n");
    return 0;
}
