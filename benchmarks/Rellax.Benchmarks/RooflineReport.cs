using BenchmarkDotNet.Reports;

namespace Rellax.Benchmarks;

/// <summary>
/// Prints GFLOP/s, GB/s, the ours/torch speed-up and the GEMV share of measured read bandwidth after a run, all from
/// per-iteration medians (on a machine shared with other builds the mean is dominated by preempted iterations).
/// </summary>
internal static class RooflineReport
{
    public static void Print(IReadOnlyList<Summary> summaries)
    {
        double? bandwidth = null; // the 64 MiB read: same footprint as the 4096x4096 GEMV weight
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(GemmReadBandwidthBenchmarks) && r.ResultStatistics is { } st)
                {
                    int mib = (int)r.BenchmarkCase.Parameters["MiB"];
                    double gbs = ((long)mib << 20) / st.Median; // bytes per ns = GB/s
                    Console.WriteLine($"\nMeasured read bandwidth (2 threads, {mib} MiB SIMD sum): {gbs:F1} GB/s");
                    if (mib == 64) bandwidth = gbs;
                }

        var rows = new List<(GemmShape Shape, string Method, double MeanNs)>();
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(GemmBenchmarks) && r.ResultStatistics is { } st)
                    rows.Add(((GemmShape)r.BenchmarkCase.Parameters["Shape"], r.BenchmarkCase.Descriptor.WorkloadMethod.Name, st.Median));
        PrintCflora(summaries, bandwidth);
        SubrBenchmarks.PrintReport(summaries);
        if (rows.Count == 0) return;

        Console.WriteLine("\n| M x K x N | method | median (ms) | GFLOP/s | GB/s (min traffic) | torch time / ours |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|");
        foreach (var g in rows.GroupBy(r => r.Shape))
        {
            double torchNs = g.FirstOrDefault(r => r.Method == nameof(GemmBenchmarks.TorchMm)).MeanNs;
            foreach (var (shape, method, ns) in g)
            {
                string speedup = torchNs > 0 ? $"{torchNs / ns:F2}x" : "-";
                Console.WriteLine($"| {shape} | {method} | {ns / 1e6:F3} | {shape.Flops / ns:F1} | {shape.Bytes / ns:F1} | {speedup} |");
            }
            if (g.Key.M == 1 && bandwidth is { } b)
                foreach (var (shape, method, ns) in g)
                    Console.WriteLine($"  GEMV {method}: {shape.Bytes / ns:F1} GB/s = {100 * shape.Bytes / ns / b:F0}% of the measured 64 MiB read bandwidth");
        }
    }

    private static void PrintCflora(IReadOnlyList<Summary> summaries, double? bandwidth)
    {
        var rows = new List<(CfloraShape Shape, string Method, double Ns)>();
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(CfloraBenchmarks) && r.ResultStatistics is { } st)
                    rows.Add(((CfloraShape)r.BenchmarkCase.Parameters["Shape"], r.BenchmarkCase.Descriptor.WorkloadMethod.Name, st.Median));
        if (rows.Count == 0) return;
        Console.WriteLine("\n| r | T | S | torch unfused (ms) | fused (ms) | base GEMM (ms) | torch / fused | fused / base | fused GFLOP/s | fused GB/s (min traffic) |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var g in rows.GroupBy(r => r.Shape))
        {
            double Ns(string m) => g.FirstOrDefault(r => r.Method == m).Ns;
            double torch = Ns(nameof(CfloraBenchmarks.TorchUnfused)), fused = Ns(nameof(CfloraBenchmarks.Fused)), gemm = Ns(nameof(CfloraBenchmarks.BaseGemm));
            var k = g.Key;
            Console.WriteLine($"| {k.R} | {k.T} | {k.S} | {torch / 1e6:F3} | {fused / 1e6:F3} | {gemm / 1e6:F3} | {torch / fused:F2}x | {fused / gemm:F3} | {k.Flops / fused:F1} | {k.Bytes / fused:F1} |");
            if (k.T == 1 && bandwidth is { } b && fused > 0)
                Console.WriteLine($"  T=1 r={k.R}: fused streams {k.Bytes / fused:F1} GB/s = {100 * k.Bytes / fused / b:F0}% of the measured 64 MiB read bandwidth; base GEMV {k.Bytes / gemm:F1} GB/s");
        }
    }
}
