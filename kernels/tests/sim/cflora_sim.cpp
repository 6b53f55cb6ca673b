// cflora_sim.cpp: runs kernels/cflora.cu on the CPU through cuda_host_sim.h against a double-accumulation reference
// (the same formula as CfloraReference in C#), for machines without a GPU. Exits non-zero on any mismatch.
//   g++ -std=c++20 -O1 -pthread -I kernels kernels/tests/sim/cflora_sim.cpp -o /tmp/cflora_sim && /tmp/cflora_sim
// It checks indexing, tiling (ragged 64-wide tiles, K tiles straddling d_in), the warp reductions and the dtype
// paths; the device-only f16 conversion (inline PTX cvt.f32.f16) is replaced by its bit-exact host fallback.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_host_sim.h"

#include "../../cflora.cu"

namespace {

unsigned g_state = 12345u;

float uniform() {  // xorshift, deterministic, in [-1, 1)
    g_state ^= g_state << 13;
    g_state ^= g_state >> 17;
    g_state ^= g_state << 5;
    return (float)(g_state & 0xffffff) / (float)0x800000 - 1.0f;
}

// A weight tensor in storage `dtype`: raw storage (float or 16-bit words) and the exact float values it holds.
struct Weight {
    int dtype;
    std::vector<float> f32;
    std::vector<unsigned short> bits;
    std::vector<float> values;
    const void* data() const { return dtype == RELLAX_CFLORA_DTYPE_F32 ? (const void*)f32.data() : (const void*)bits.data(); }
};

Weight make_weight(int dtype, size_t n) {
    Weight w{dtype, {}, {}, {}};
    for (size_t i = 0; i < n; i++) {
        const float v = uniform();
        if (dtype == RELLAX_CFLORA_DTYPE_F32) {
            w.f32.push_back(v);
            w.values.push_back(v);
        } else if (dtype == RELLAX_CFLORA_DTYPE_BF16) {
            const unsigned short b = (unsigned short)(__float_as_uint(v) >> 16);  // truncation: exactly representable
            w.bits.push_back(b);
            w.values.push_back(__uint_as_float((unsigned)b << 16));
        } else {
            // f16 with a random sign, exponent 2^-14 .. 2^0 (and some subnormals) and mantissa.
            unsigned short h = (unsigned short)(g_state & 0x83ffu);
            h |= (unsigned short)(((g_state >> 10) % 16) << 10);
            uniform();
            w.bits.push_back(h);
            w.values.push_back(rellax_cflora_f16_to_f32(h));
        }
    }
    return w;
}

int check(int T, int S, int d_in, int d_out, int r, int w0_dtype, int ab_dtype, bool with_bias, float scale) {
    std::vector<float> x((size_t)T * d_in), g((size_t)S * r * r), bias(with_bias ? d_out : 0);
    std::vector<int> row_sample(T);
    for (auto& v : x) v = uniform();
    for (auto& v : g) v = uniform();
    for (auto& v : bias) v = uniform();
    for (int t = 0; t < T; t++) row_sample[t] = (int)((g_state >> 3) % (unsigned)S), uniform();
    const Weight w0 = make_weight(w0_dtype, (size_t)d_out * d_in);
    const Weight a = make_weight(ab_dtype, (size_t)r * d_in);
    const Weight b = make_weight(ab_dtype, (size_t)d_out * r);

    std::vector<float> v((size_t)T * r, -1.0f), y((size_t)T * d_out, -1.0f);
    rellax_sim_launch({(unsigned)T, 1, 1}, {256, 1, 1}, [&] {
        rellax_cflora_down(x.data(), a.data(), a.dtype, g.data(), row_sample.data(), v.data(), T, d_in, r, scale);
    });
    rellax_sim_launch({(unsigned)((d_out + 63) / 64), (unsigned)((T + 63) / 64), 1}, {256, 1, 1}, [&] {
        rellax_cflora_gemm(x.data(), v.data(), w0.data(), w0.dtype, b.data(), b.dtype,
                           with_bias ? bias.data() : nullptr, y.data(), T, d_out, d_in, r);
    });

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
            const double want = acc + scale * ad;
            const double got = y[(size_t)t * d_out + o];
            if (!(std::fabs(got - want) <= 1e-4 + 1e-4 * std::fabs(want))) {
                if (bad < 5) std::fprintf(stderr, "  mismatch at t=%d o=%d: got %.8g want %.8g\n", t, o, got, want);
                bad++;
            }
        }
    }
    std::printf("cflora T=%d S=%d d_in=%d d_out=%d r=%d w0=%d ab=%d bias=%d: %s\n", T, S, d_in, d_out, r, w0_dtype,
                ab_dtype, (int)with_bias, bad ? "FAIL" : "ok");
    return bad;
}

}  // namespace

int main() {
    int failures = 0;
    failures += check(1, 1, 1, 1, 1, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, false, 1.0f) != 0;
    failures += check(5, 2, 37, 45, 8, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, true, 2.0f) != 0;
    failures += check(70, 3, 100, 130, 16, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F16, true, 1.0f) != 0;
    failures += check(65, 4, 48, 64, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, false, 2.0f) != 0;
    failures += check(9, 3, 33, 20, 40, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_F16, true, 0.5f) != 0;
    failures += check(3, 2, 20, 70, 128, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F32, false, 0.25f) != 0;
    if (failures) {
        std::fprintf(stderr, "cflora_sim: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("cflora_sim: all passed\n");
    return 0;
}
