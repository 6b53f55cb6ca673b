using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;

namespace Rellax.Benchmarks;

/// <summary>
/// The machine's sustained read bandwidth, the roofline for the M = 1 GEMV in <see cref="GemmBenchmarks"/>:
/// both threads sum their half of a float array with Vector512 loads. 256 MiB is far beyond any cache (DRAM
/// bandwidth); 64 MiB is exactly the footprint of the 4096×4096 GEMV weight, so any help the GEMV gets from the
/// L3 cache across repeated calls is given to this measurement too. Each thread reads its half as four
/// concurrent streams (like the GEMV, which reads four weight rows at once): with one stream per core the hardware
/// prefetchers leave bandwidth unused, and the GEMV would appear to beat the "roofline".
/// </summary>
public unsafe class GemmReadBandwidthBenchmarks
{
    /// <summary>Size of the array read per operation, in MiB.</summary>
    [Params(64, 256)]
    public int MiB { get; set; } = 256;

    private long Bytes => (long)MiB << 20;

    private float* _data;

    /// <summary>Allocates and touches the array.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _data = (float*)NativeMemory.AlignedAlloc((nuint)Bytes, 64);
        long n = Bytes / sizeof(float);
        for (long i = 0; i < n; i++) _data[i] = i & 7;
    }

    /// <summary>Frees the array.</summary>
    [GlobalCleanup]
    public void Cleanup() => NativeMemory.AlignedFree(_data);

    /// <summary>Sums the array on <see cref="GemmBenchmarks.Threads"/> threads; returns the sum so it cannot be elided.</summary>
    [Benchmark]
    public float SumRead()
    {
        long n = Bytes / sizeof(float);
        int threads = GemmBenchmarks.Threads;
        var partial = new float[threads];
        nint p = (nint)_data;
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            const int Streams = 4;
            long len = n / threads / Streams;
            float* s0 = (float*)p + n / threads * t, s1 = s0 + len, s2 = s1 + len, s3 = s2 + len;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
            for (long i = 0; i < len; i += 32)
            {
                a0 += Vector512.Load(s0 + i); a1 += Vector512.Load(s1 + i); a2 += Vector512.Load(s2 + i); a3 += Vector512.Load(s3 + i);
                b0 += Vector512.Load(s0 + i + 16); b1 += Vector512.Load(s1 + i + 16); b2 += Vector512.Load(s2 + i + 16); b3 += Vector512.Load(s3 + i + 16);
            }
            partial[t] = Vector512.Sum(a0 + a1 + a2 + a3 + b0 + b1 + b2 + b3);
        });
        return partial.Sum();
    }
}
