using System.Diagnostics;

namespace Rellax.Benchmarks;

/// <summary>
/// Steady-state timing of the small SUBR cases (<c>--subr-steady</c>). <see cref="SubrBenchmarks"/> runs one
/// invocation per iteration, which the big cases need (a call takes seconds), but a sub-millisecond call then measures
/// the wake-up of parked worker threads and cold caches more than the kernel. Here each method runs back to back many
/// times, with a 2 ms pause after every third call so some calls do start from parked threads. The same
/// <see cref="SubrBenchmarks"/> instance (table, histories, torch tensors) serves both sides, so the ratio compares
/// like with like.
/// </summary>
public static class SubrSteadyState
{
    /// <summary>Times Rellax and TorchPerSample on B = 64, L ∈ {100, 2000}, K = 30, f32 and i8; prints medians and ratios.</summary>
    public static void Run()
    {
        Console.WriteLine("| table | B | L | K | torch per sample median (us) | rellax median (us) | rellax p10 / p90 (us) | torch / rellax |");
        Console.WriteLine("|---|---|---|---|---:|---:|---|---:|");
        foreach (string table in new[] { "f32", "i8" })
            foreach (int l in new[] { 100, 2000 })
            {
                var bench = new SubrBenchmarks { Shape = new SubrShape(table, 64, l, 30) };
                bench.Setup();
                try
                {
                    int calls = l <= 100 ? 300 : 60;
                    var torch = Time(() => bench.TorchPerSample(), calls);
                    var ours = Time(bench.Rellax, calls);
                    Console.WriteLine($"| {table} | 64 | {l} | 30 | {torch[calls / 2]:F0} | {ours[calls / 2]:F0} | {ours[calls / 10]:F0} / {ours[calls * 9 / 10]:F0} | {torch[calls / 2] / ours[calls / 2]:F1}x |");
                }
                finally
                {
                    bench.Cleanup();
                }
            }
    }

    private static double[] Time(Action call, int calls)
    {
        for (int i = 0; i < 5; i++) call();
        var times = new double[calls];
        for (int i = 0; i < calls; i++)
        {
            var clock = Stopwatch.StartNew();
            call();
            times[i] = clock.Elapsed.TotalMicroseconds;
            if (i % 3 == 2) Thread.Sleep(2);
        }
        Array.Sort(times);
        return times;
    }
}
