using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;

namespace Rellax.Benchmarks;

/// <summary>
/// The machine's sustained read bandwidth, the roofline for the M = 1 GEMV in <see cref="GemmBenchmarks"/>:
/// both threads sum their half of a 256 MiB float array with Vector512 loads into four accumulators each.
/// </summary>
public unsafe class GemmReadBandwidthBenchmarks
{
    /// <summary>Size of the array read per operation.</summary>
    public const long Bytes = 256L << 20;

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

    /// <summary>Sums the 256 MiB on <see cref="GemmBenchmarks.Threads"/> threads; returns the sum so it cannot be elided.</summary>
    [Benchmark]
    public float SumRead256MiB()
    {
        long n = Bytes / sizeof(float);
        int threads = GemmBenchmarks.Threads;
        var partial = new float[threads];
        nint p = (nint)_data;
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            float* d = (float*)p + n / threads * t;
            long len = n / threads;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (long i = 0; i < len; i += 64)
            {
                a0 += Vector512.Load(d + i); a1 += Vector512.Load(d + i + 16);
                a2 += Vector512.Load(d + i + 32); a3 += Vector512.Load(d + i + 48);
            }
            partial[t] = Vector512.Sum(a0 + a1 + a2 + a3);
        });
        return partial.Sum();
    }
}
