using BenchmarkDotNet.Reports;

namespace Rellax.Benchmarks;

/// <summary>Prints GFLOP/s, GB/s, the ours/torch speed-up and the GEMV share of measured read bandwidth after a run.</summary>
internal static class RooflineReport
{
    public static void Print(IReadOnlyList<Summary> summaries)
    {
        double? bandwidth = null;
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(GemmReadBandwidthBenchmarks) && r.ResultStatistics is { } st)
                    bandwidth = GemmReadBandwidthBenchmarks.Bytes / st.Mean; // bytes per ns = GB/s
        if (bandwidth is { } bw) Console.WriteLine($"\nMeasured read bandwidth (2 threads, 256 MiB SIMD sum): {bw:F1} GB/s");

        var rows = new List<(GemmShape Shape, string Method, double MeanNs)>();
        foreach (var s in summaries)
            foreach (var r in s.Reports)
                if (r.BenchmarkCase.Descriptor.Type == typeof(GemmBenchmarks) && r.ResultStatistics is { } st)
                    rows.Add(((GemmShape)r.BenchmarkCase.Parameters["Shape"], r.BenchmarkCase.Descriptor.WorkloadMethod.Name, st.Mean));
        if (rows.Count == 0) return;

        Console.WriteLine("\n| M x K x N | method | mean (ms) | GFLOP/s | GB/s (min traffic) | torch time / ours |");
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
                    Console.WriteLine($"  GEMV {method}: {shape.Bytes / ns:F1} GB/s = {100 * shape.Bytes / ns / b:F0}% of measured read bandwidth");
        }
    }
}
