namespace Rellax.Kernels;

/// <summary>
/// Checks every op family on a set of backends (<c>rellax selftest</c>): each op runs on random inputs with odd shapes
/// through its public front, and its output is compared with the plain double-precision reference
/// (<see cref="PrimitivesReference"/>, <see cref="CfloraReference"/>, <see cref="SubrReference"/>,
/// <see cref="BackwardReference"/> and the attention references) and with the CPU backend's output. An op a backend does not
/// implement (it throws <see cref="NotSupportedException"/>) is reported as such, never skipped silently.
/// <see cref="Bench"/> times the issue's benchmark shapes against the device's peak.
/// </summary>
public static partial class KernelSelftest
{
    /// <summary>
    /// Runs every check (or those <paramref name="only"/> accepts) on every backend in <paramref name="backends"/>; the
    /// reference of each op is computed once.
    /// </summary>
    /// <param name="backends">The backends to check (their names label the rows).</param>
    /// <param name="size">How large the shapes are.</param>
    /// <param name="onRow">Called with each row as soon as it is known (progress), or null.</param>
    /// <param name="seed">Seed of the random inputs.</param>
    /// <param name="only">Given an op name (see <see cref="OpNames"/>), whether to run it; null runs every op.</param>
    /// <param name="cancellationToken">Checked between ops.</param>
    /// <returns>One row per (op, backend), ops in a fixed order, backends in the order given.</returns>
    public static IReadOnlyList<SelftestCheck> Check(IReadOnlyList<ComputeBackend> backends, SelftestSize size,
        Action<SelftestCheck>? onRow = null, int seed = 20, Func<string, bool>? only = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backends);
        if (!Enum.IsDefined(size)) throw new ArgumentOutOfRangeException(nameof(size), size, "unknown size");
        // The CPU's output is the second yardstick; use the caller's CPU backend when it is in the list.
        var cpu = backends.OfType<Cpu.CpuBackend>().FirstOrDefault();
        using var ownCpu = cpu is null ? new Cpu.CpuBackend() : null;
        cpu ??= ownCpu!;
        var rows = new List<SelftestCheck>();
        foreach (var c in Cases(size, seed).Where(c => only?.Invoke(c.Op) ?? true))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var cpuOut = Execute(c, cpu, out _, out _);
            foreach (var backend in backends)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var row = Judge(c, backend, ReferenceEquals(backend, cpu) ? cpuOut : null, cpuOut);
                rows.Add(row);
                onRow?.Invoke(row);
            }
        }
        return rows;
    }

    /// <summary>The op names <see cref="Check"/> runs, in order.</summary>
    public static IReadOnlyList<string> OpNames { get; } = Cases(SelftestSize.Small, 1).Select(c => c.Op).ToArray();

    /// <summary>How an op's output is judged against its reference.</summary>
    private abstract record Criterion;

    /// <summary>Every element: |out − ref| ≤ atol + rtol·|ref| (NaN only where the reference is NaN).</summary>
    private sealed record Elementwise(double Atol, double Rtol) : Criterion
    {
        public override string ToString() => Atol == 0 && Rtol == 0 ? "exact" : $"|err| <= {Atol:0.#e0} + {Rtol:0.#e0}|ref|";
    }

    /// <summary>Σ|out − ref| / Σ|ref| ≤ the bound (int8 kernels, where one rounding flip moves one element a little).</summary>
    private sealed record RelativeL1(double Bound) : Criterion
    {
        public override string ToString() => $"relL1 <= {Bound:0.#e0}";
    }

    /// <summary>
    /// One op: <see cref="Run"/> runs it on a backend and returns its outputs concatenated; <see cref="Reference"/> gives
    /// the double reference of the same elements (it may look at the output: SUBR scores are checked at the positions
    /// returned); <see cref="Extra"/> adds a condition and a note (e.g. int8 attention's cosine against exact attention).
    /// </summary>
    private sealed record Case(string Op, string Shape, Criterion Criterion, Func<SelftestRun, float[]> Run,
        Func<float[], double[]> Reference, Func<float[], (bool Ok, string Note)>? Extra = null);

    private static float[]? Execute(Case c, ComputeBackend backend, out double ms, out string? failure)
    {
        ms = double.NaN;
        failure = null;
        using var run = new SelftestRun(backend);
        try
        {
            var output = c.Run(run);
            ms = run.Milliseconds;
            return output;
        }
        catch (NotSupportedException)
        {
            return null;
        }
        catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
        {
            // Any other exception is this op's failure on this backend (a CUDA launch error, a kernel compile error, ...).
            failure = $"{e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}";
            return null;
        }
    }

    private static SelftestCheck Judge(Case c, ComputeBackend backend, float[]? known, float[]? cpuOut)
    {
        double ms = double.NaN;
        string? failure = null;
        var output = known ?? Execute(c, backend, out ms, out failure);
        if (known is not null)
        {
            // The CPU's output was computed once already; time a second call for its row.
            using var again = new SelftestRun(backend);
            c.Run(again);
            ms = again.Milliseconds;
        }
        string tol = c.Criterion.ToString()!;
        if (output is null)
            return failure is null
                ? new SelftestCheck(c.Op, c.Shape, backend.Name, SelftestStatus.NotImplemented, double.NaN, double.NaN, tol, double.NaN, double.NaN, "not implemented on this backend")
                : new SelftestCheck(c.Op, c.Shape, backend.Name, SelftestStatus.Fail, double.NaN, double.NaN, tol, double.NaN, double.NaN, failure);
        var reference = c.Reference(output);
        var (abs, rel, ok, where) = Compare(output, reference, c.Criterion);
        double vsCpu = cpuOut is null ? double.NaN : MaxAbsDifference(output, cpuOut);
        var notes = new List<string>();
        if (!ok) notes.Add(where);
        if (c.Extra is not null)
        {
            var (extraOk, note) = c.Extra(output);
            ok &= extraOk;
            notes.Add(note);
        }
        return new SelftestCheck(c.Op, c.Shape, backend.Name, ok ? SelftestStatus.Pass : SelftestStatus.Fail, abs, rel, tol, vsCpu, ms, string.Join("; ", notes));
    }

    /// <summary>Max abs and normwise relative error, and whether the criterion holds (with the worst element when not).</summary>
    private static (double Abs, double Rel, bool Ok, string Where) Compare(float[] actual, double[] expected, Criterion criterion)
    {
        if (actual.Length != expected.Length)
            return (double.NaN, double.NaN, false, $"{actual.Length} output elements, the reference has {expected.Length}");
        double abs = 0, maxRef = 0, l1 = 0, l1Ref = 0, worstRatio = 0;
        int worst = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            if (double.IsNaN(e))
            {
                if (!double.IsNaN(a)) { worstRatio = double.PositiveInfinity; worst = i; }
                continue;
            }
            double err = Math.Abs(a - e);
            if (double.IsNaN(err)) err = double.PositiveInfinity;
            abs = Math.Max(abs, err);
            maxRef = Math.Max(maxRef, Math.Abs(e));
            l1 += err;
            l1Ref += Math.Abs(e);
            if (criterion is Elementwise ew)
            {
                double ratio = err == 0 ? 0 : err / (ew.Atol + ew.Rtol * Math.Abs(e));
                if (!(ratio <= worstRatio)) { worstRatio = ratio; worst = i; }
            }
        }
        double rel = maxRef == 0 ? abs : abs / maxRef;
        double relL1 = l1Ref == 0 ? l1 : l1 / l1Ref;
        string nanNote = worstRatio > 0 && worst >= 0 ? $", element {worst} is {actual[worst]} where the reference is NaN" : "";
        return criterion switch
        {
            Elementwise when worstRatio <= 1 => (abs, rel, true, ""),
            Elementwise => (abs, rel, false, $"worst element {worst}: {actual[worst]:G9} vs reference {expected[worst]:G9}"),
            RelativeL1 r when relL1 <= r.Bound && worstRatio == 0 => (abs, rel, true, $"relL1 {relL1:E2}"),
            RelativeL1 => (abs, rel, false, $"relL1 {relL1:E2}{nanNote}"),
            _ => throw new InvalidOperationException("unknown criterion"),
        };
    }

    private static double MaxAbsDifference(float[] a, float[] b)
    {
        if (a.Length != b.Length) return double.PositiveInfinity;
        double worst = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (float.IsNaN(a[i]) && float.IsNaN(b[i])) continue;
            double d = Math.Abs((double)a[i] - b[i]);
            worst = double.IsNaN(d) ? double.PositiveInfinity : Math.Max(worst, d);
        }
        return worst;
    }

    /// <summary>Cosine similarity and relative L1 of an output against an fp64 reference.</summary>
    internal static (double Cosine, double RelativeL1) Similarity(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        double dot = 0, na = 0, ne = 0, l1 = 0, l1e = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            dot += a * e; na += a * a; ne += e * e; l1 += Math.Abs(a - e); l1e += Math.Abs(e);
        }
        return (na == 0 && ne == 0 ? 1 : dot / Math.Sqrt(na * ne), l1e == 0 ? l1 : l1 / l1e);
    }

    private static double[] Widen(ReadOnlySpan<float> values)
    {
        var d = new double[values.Length];
        for (int i = 0; i < d.Length; i++) d[i] = values[i];
        return d;
    }

    private static Func<float[], double[]> Fixed(Func<double[]> reference)
    {
        var lazy = new Lazy<double[]>(reference);
        return _ => lazy.Value;
    }

    private static Func<float[], double[]> FixedF(Func<float[]> reference) => Fixed(() => Widen(reference()));
}
