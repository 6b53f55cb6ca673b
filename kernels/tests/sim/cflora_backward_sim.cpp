// cflora_backward_sim.cpp: runs the backward kernels of kernels/cflora.cu (rellax_cflora_back_down, _back_dg,
// _back_outer, _back_dx) on the CPU through cuda_host_sim.h against a double-accumulation reference (the formulas of
// CfloraReference.Backward in C#), for machines without a GPU. Exits non-zero on any mismatch.
//   g++ -std=c++20 -O1 -pthread -I kernels kernels/tests/sim/cflora_backward_sim.cpp -o /tmp/cflora_backward_sim && /tmp/cflora_backward_sim
// It checks indexing, the transposed-weight staging of the dX GEMM (ragged 64-wide tiles, K tiles straddling d_out),
// accumulation over modules, identity G, per-sample dG with empty samples, and the dtype paths.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_host_sim.h"

#include "../../cflora.cu"
#include "../cflora_check.h"

namespace {

int compare(const char* what, const std::vector<float>& got, const std::vector<double>& want) {
    double max = 0;
    for (double w : want) max = std::max(max, std::fabs(w));
    int bad = 0;
    for (size_t i = 0; i < want.size(); i++) {
        if (!(std::fabs(got[i] - want[i]) <= 1e-5 * max + 1e-6 + 1e-4 * std::fabs(want[i]))) {
            if (bad < 5) std::fprintf(stderr, "  %s mismatch at %zu: got %.8g want %.8g\n", what, i, got[i], want[i]);
            bad++;
        }
    }
    return bad;
}

// One module's backward; dx_in holds the accumulated dX of earlier modules (accumulate = 1) or garbage (0).
int check(int T, int S, int d_in, int d_out, int r, int w0_dtype, int ab_dtype, bool identity, float scale, bool accumulate) {
    const cflora_check::Problem p = cflora_check::make_problem(T, S, d_in, d_out, r, w0_dtype, ab_dtype, false, scale);
    std::vector<float> dy((size_t)T * d_out);
    for (auto& v : dy) v = cflora_check::uniform();
    std::vector<float> prior((size_t)T * d_in);
    for (auto& v : prior) v = accumulate ? cflora_check::uniform() : -7.0f;
    const float* g = identity ? nullptr : p.g.data();

    // Reference in double.
    std::vector<double> u((size_t)T * r), z((size_t)T * r), du((size_t)T * r), v((size_t)T * r);
    std::vector<double> dx((size_t)T * d_in), da((size_t)r * d_in, 0.0), db((size_t)d_out * r, 0.0), dg((size_t)S * r * r, 0.0);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < r; i++) {
            double ua = 0, za = 0;
            for (int c = 0; c < d_in; c++) ua += (double)p.a.values[(size_t)i * d_in + c] * p.x[(size_t)t * d_in + c];
            for (int o = 0; o < d_out; o++) za += (double)p.b.values[(size_t)o * r + i] * dy[(size_t)t * d_out + o];
            u[(size_t)t * r + i] = ua;
            z[(size_t)t * r + i] = za;
        }
        const float* gs = p.g.data() + (size_t)p.row_sample[t] * r * r;
        for (int i = 0; i < r; i++) {
            double dua = 0, va = 0;
            for (int j = 0; j < r; j++) {
                const double gij = identity ? (i == j) : gs[i * r + j], gji = identity ? (i == j) : gs[j * r + i];
                dua += gij * z[(size_t)t * r + j];
                va += u[(size_t)t * r + j] * gji;
            }
            du[(size_t)t * r + i] = scale * dua;
            v[(size_t)t * r + i] = scale * va;
        }
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) dg[((size_t)p.row_sample[t] * r + i) * r + j] += scale * u[(size_t)t * r + i] * z[(size_t)t * r + j];
        for (int c = 0; c < d_in; c++) {
            double acc = accumulate ? prior[(size_t)t * d_in + c] : 0.0;
            for (int o = 0; o < d_out; o++) acc += (double)dy[(size_t)t * d_out + o] * p.w0.values[(size_t)o * d_in + c];
            for (int i = 0; i < r; i++) acc += du[(size_t)t * r + i] * p.a.values[(size_t)i * d_in + c];
            dx[(size_t)t * d_in + c] = acc;
            for (int i = 0; i < r; i++) da[(size_t)i * d_in + c] += du[(size_t)t * r + i] * p.x[(size_t)t * d_in + c];
        }
        for (int o = 0; o < d_out; o++)
            for (int j = 0; j < r; j++) db[(size_t)o * r + j] += dy[(size_t)t * d_out + o] * v[(size_t)t * r + j];
    }

    // The kernels.
    std::vector<float> ku((size_t)T * r), kz((size_t)T * r), kdu((size_t)T * r), kv((size_t)T * r);
    std::vector<float> kdx = prior, kda((size_t)r * d_in, -3.0f), kdb((size_t)d_out * r, -3.0f), kdg((size_t)S * r * r, -3.0f);
    rellax_sim_launch({(unsigned)T, 1, 1}, {256, 1, 1}, [&] {
        rellax_cflora_back_down(p.x.data(), dy.data(), p.a.data(), p.b.data(), ab_dtype, g, p.row_sample.data(),
                                ku.data(), kz.data(), kdu.data(), kv.data(), T, d_in, d_out, r, scale);
    });
    if (!identity)
        rellax_sim_launch({(unsigned)S, 1, 1}, {256, 1, 1}, [&] {
            rellax_cflora_back_dg(ku.data(), kz.data(), p.row_sample.data(), kdg.data(), T, r, scale);
        });
    rellax_sim_launch({(unsigned)((r * d_in + 255) / 256), 1, 1}, {256, 1, 1}, [&] {
        rellax_cflora_back_outer(kdu.data(), p.x.data(), kda.data(), T, r, d_in, 0);
    });
    rellax_sim_launch({(unsigned)((r * d_out + 255) / 256), 1, 1}, {256, 1, 1}, [&] {
        rellax_cflora_back_outer(kv.data(), dy.data(), kdb.data(), T, r, d_out, 1);
    });
    rellax_sim_launch({(unsigned)((d_in + 63) / 64), (unsigned)((T + 63) / 64), 1}, {256, 1, 1}, [&] {
        rellax_cflora_back_dx(dy.data(), kdu.data(), p.w0.data(), p.w0.dtype, p.a.data(), p.a.dtype, kdx.data(),
                              T, d_in, d_out, r, accumulate ? 1 : 0);
    });

    int bad = compare("dx", kdx, dx) + compare("da", kda, da) + compare("db", kdb, db);
    if (!identity) bad += compare("dg", kdg, dg);
    std::printf("cflora backward T=%d S=%d d_in=%d d_out=%d r=%d w0=%d ab=%d identity=%d accumulate=%d: %s\n", T, S, d_in, d_out, r,
                w0_dtype, ab_dtype, (int)identity, (int)accumulate, bad ? "FAIL" : "ok");
    return bad;
}

}  // namespace

int main() {
    int failures = 0;
    failures += check(1, 1, 1, 1, 1, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, false, 1.0f, false) != 0;
    failures += check(5, 3, 37, 45, 8, RELLAX_CFLORA_DTYPE_F32, RELLAX_CFLORA_DTYPE_F32, false, 2.0f, false) != 0;
    failures += check(70, 4, 100, 130, 16, RELLAX_CFLORA_DTYPE_F16, RELLAX_CFLORA_DTYPE_F16, false, 1.0f, true) != 0;
    failures += check(65, 2, 70, 64, 8, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_BF16, true, 2.0f, false) != 0;
    failures += check(9, 5, 33, 20, 40, RELLAX_CFLORA_DTYPE_BF16, RELLAX_CFLORA_DTYPE_F16, false, 0.5f, true) != 0;
    if (failures) {
        std::fprintf(stderr, "cflora_backward_sim: %d configuration(s) failed\n", failures);
        return 1;
    }
    std::printf("cflora_backward_sim: all passed\n");
    return 0;
}
