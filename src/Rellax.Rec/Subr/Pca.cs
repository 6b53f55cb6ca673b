using System.Numerics.Tensors;
using Rellax.Runtime;
using System.Runtime.Intrinsics;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Tensor = Rellax.Kernels.Tensor;

namespace Rellax.Rec;

/// <summary>
/// Fills <paramref name="destination"/> with rows [<paramref name="firstRow"/>, firstRow + destination.Length / dim)
/// of the data, f32, row-major. <see cref="Pca.Fit(ComputeBackend, long, int, PcaRowReader, PcaOptions?, CancellationToken)"/> calls it
/// once per chunk per pass, in increasing row order, and expects the same values every pass.
/// </summary>
/// <param name="firstRow">Index of the first row wanted (0-based).</param>
/// <param name="destination">f32 [rows, dim], to be filled completely.</param>
public delegate void PcaRowReader(long firstRow, Span<float> destination);

/// <summary>Settings of a <see cref="Pca"/> fit (randomized SVD, Halko, Martinsson and Tropp 2011).</summary>
public sealed record PcaOptions
{
    /// <summary>k, the number of principal components kept; 1 ≤ k ≤ min(rows, dim). Default 512 (SPEC §2).</summary>
    public int Components { get; init; } = 512;

    /// <summary>
    /// p, extra sketch columns (l = k + p, capped at min(rows, dim)); more makes the top k more accurate. Default 10.
    /// On a flat spectrum (σ_k / σ_(l+1) close to 1) the defaults underestimate the trailing variances by up to a few
    /// percent, as every randomized SVD does (GloVe 100-d, k = 32: up to 5%, captured variance −0.9%, the same as
    /// torch.pca_lowrank's algorithm); p = 40, q = 10 brings them within 1e-5 there.
    /// </summary>
    public int Oversampling { get; init; } = 10;

    /// <summary>q, power (subspace) iterations; each costs two more passes over the data. Default 4.</summary>
    public int PowerIterations { get; init; } = 4;

    /// <summary>Seed of the Gaussian test matrix: the same seed, data, backend and thread count give bitwise-identical results.</summary>
    public long Seed { get; init; }

    /// <summary>Subtract the column means first (ordinary PCA). When false the SVD is of the raw data, and variances are
    /// second moments about zero.</summary>
    public bool Center { get; init; } = true;

    /// <summary>Rows per chunk in every pass over the data; 0 picks clamp(2¹⁹ / dim, 512, 4096) (2 MiB of f32 at dim ≤ 1024,
    /// small enough for the host-side centring and transposition to run in cache; 512 rows, 16 MiB, at dim = 8192, large
    /// enough that the per-chunk double accumulation of the l × D products stays ≲ 10% of the GEMM).
    /// Results depend on it only through rounding.</summary>
    public int ChunkRows { get; init; }

    internal int ResolveChunkRows(long rows, int dim)
    {
        long c = ChunkRows > 0 ? ChunkRows : Math.Clamp((1 << 19) / dim, 512, 4096);
        return (int)Math.Min(c, rows);
    }

    internal void Validate(long rows, int dim)
    {
        if (dim < 1) throw new ArgumentOutOfRangeException(nameof(dim), dim, "PCA needs dim >= 1");
        if (rows < 2) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"PCA needs at least 2 rows (variances divide by rows - 1), got {rows}");
        long max = Math.Min(rows, dim);
        if (Components < 1 || Components > max)
            throw new ArgumentOutOfRangeException(nameof(Components), Components,
                $"Components (k = {Components}) must be between 1 and min(rows = {rows}, dim = {dim}) = {max}");
        if (Oversampling < 0) throw new ArgumentOutOfRangeException(nameof(Oversampling), Oversampling, "Oversampling must be >= 0");
        if (PowerIterations is < 0 or > 100) throw new ArgumentOutOfRangeException(nameof(PowerIterations), PowerIterations, "PowerIterations must be in 0..100");
        if (ChunkRows < 0 || (long)ChunkRows * dim > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(ChunkRows), ChunkRows, $"ChunkRows must be >= 0 with ChunkRows × dim ({dim}) <= {int.MaxValue}");
        if ((long)Math.Min((long)Components + Oversampling, max) * dim > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(dim), dim, "(k + p) × dim must fit in one array");
    }
}

/// <summary>
/// Principal component analysis of N row vectors of dimension D (the SUBR item vectors, SPEC §2: N up to 10⁶, D up to
/// 8192, k = 512), fitted by randomized SVD with power iterations on the backend's fp32 GEMM.
/// <para>
/// <b>Algorithm</b> (Halko, Martinsson and Tropp 2011, Alg. 4.4 and 5.1), with X_c = X − 1μᵀ, l = min(k + p, N, D):
/// <code>
/// pass 0:  μ, column variances (Chan's merge of per-chunk two-pass moments, double) and the finiteness check;
///          in the same pass Y = (X − 1sᵀ) Ω with s = the first chunk's mean, then Y −= 1 ((μ − s)ᵀ Ω)
///          (Ω Gaussian [D, l] from a seeded xoshiro256** + Box-Muller; the shift s keeps the fp32 sketch free of
///          cancellation when |μ| ≫ spread)
/// Q = orth(Y)                                   [N, l]
/// repeat q times:  W = orth(X_cᵀ Q)  [D, l]   (1 pass)
///                  Q = orth(X_c W)   [N, l]   (1 pass)
/// B = Qᵀ X_c                                    [l, D]   (1 pass)
/// B Bᵀ = U Λ Uᵀ (Jacobi, double);  V = Λ^-½ Uᵀ B;  components = top-k rows of V;  variance_i = λ_i / (N − 1)
/// </code>
/// Every pass reads X in row chunks (<see cref="PcaOptions.ChunkRows"/>), centres the chunk on the host
/// (x − μ in fp32) and runs one GEMM per chunk: <c>Y_chunkᵀ = MatMul(Wᵀ [l, D], X_chunk [m, D])</c> (then transposed
/// on the host, m × l), and <c>(X_cᵀ Q)ᵀ</c> += <c>MatMul(Q_chunkᵀ [l, m], X_chunkᵀ [D, m])</c> (the chunk is transposed on
/// the host; 8 × 8 AVX blocks), accumulated over chunks in double. So the memory is O(chunk · D + l · (N + D)): Y/Q live on the host, f32 [N, l].
/// </para>
/// <para>
/// <b>Orthonormalisation.</b> orth on the N side is CholeskyQR2 on the GEMM: the Gram matrix YᵀY is accumulated in
/// double from per-chunk GEMMs, column-scaled to unit diagonal, factored (Cholesky in double), and Y ← Y S L⁻ᵀ runs on the
/// GEMM again; it repeats until the scaled Gram it factored was nearly diagonal (Gershgorin: condition ≤ 3), which takes two
/// rounds for the first sketch and usually one after a power iteration, whose columns are already nearly orthogonal. When a
/// pivot falls below 1e-4 (a column nearly inside the span of the others, which the fp32 Gram cannot resolve) the round
/// uses the eigendecomposition of the Gram instead and drops directions below 1e-5 of the largest eigenvalue, then
/// refills the dropped columns with fresh Gaussian columns, so later iterations can still find the weak directions of a
/// steep spectrum. On the D side (l × D, double, host) the same procedure runs with thresholds 1e-10 / 1e-12.
/// </para>
/// <para>
/// <b>Roofline.</b> The big GEMMs cost 2·N·D·l·(2q + 2) FLOPs (q + 1 products X_c W and q + 1 products Qᵀ X_c), and X is
/// read 2q + 2 times (4·N·D bytes each; pass 0 also feeds the first sketch), so at 2·l FLOPs per 4 bytes read the passes
/// are compute bound for any useful l. The N-side CholeskyQR adds 4·N·l² FLOPs per round (Gram + update, both GEMMs),
/// about 2·l/D of a pass; host work per pass is O(N·D) moves (centring, the transposed copy for Qᵀ X_c) plus O(l·D) per
/// chunk (double accumulation), and the l × l Cholesky/Jacobi (O(l³)) and D-side (O(l²·D)) work in double is independent
/// of N. Measured (benchmarks/results/pca-cpu.md): N = 20,000, D = 1024, k = 128, q = 4 (56.5 GFLOP) takes 0.96 s on two
/// Zen 5 cores when the machine is quiet (torch.pca_lowrank's algorithm: 0.87 s), ~0.5 s of which is the GEMM passes
/// (110 to 140 GFLOP/s: one side of every product is only l wide). At N = 10⁶, D = 8192,
/// k = 512, p = 10, q = 4 the passes are 8.6·10¹³ FLOPs: ~13 minutes on those two cores, well under a minute on a GPU.
/// </para>
/// <para>
/// <b>Output conventions.</b> Rows of <see cref="ComponentVectors"/> are orthonormal, sorted by explained variance
/// descending, and each has its largest-magnitude entry positive (the first such entry on ties). When the data has
/// numerical rank r &lt; k (e.g. N ≤ D with centring: rank ≤ N − 1), components r..k−1 are a seeded orthonormal
/// completion whose variances are ≈ 0; <see cref="Rank"/> says where that starts.
/// <see cref="ExplainedVarianceRatio"/> divides by <see cref="TotalVariance"/>, which is computed exactly from the data in
/// pass 0, not from the sketch.
/// </para>
/// </summary>
public sealed class Pca
{
    private readonly float[] _mean;
    private readonly float[] _components;
    private readonly double[] _variance;
    private readonly double[] _ratio;

    private Pca(ComputeBackend backend, PcaOptions options, long rows, int dim, float[] mean, float[] components,
        double[] variance, double totalVariance, int rank)
    {
        Backend = backend;
        Options = options;
        Rows = rows;
        InputDim = dim;
        _mean = mean;
        _components = components;
        _variance = variance;
        TotalVariance = totalVariance;
        Rank = rank;
        _ratio = new double[variance.Length];
        for (int i = 0; i < variance.Length; i++) _ratio[i] = totalVariance > 0 ? variance[i] / totalVariance : 0;
    }

    /// <summary>
    /// The one rule every command applies to a requested PCA size: a request larger than min(rows, dim) is capped to it,
    /// and PCA is skipped when there are fewer than 2 rows; either way <paramref name="warn"/> says so (one line), so a
    /// request is never changed silently.
    /// </summary>
    /// <param name="requested">The requested number of components (null: no PCA).</param>
    /// <param name="rows">N, the number of vectors.</param>
    /// <param name="dim">D, their dimension.</param>
    /// <param name="warn">Receives the warning when the request is not honoured as given.</param>
    /// <returns>The number of components to fit, or null for no PCA.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="requested"/> is below 1.</exception>
    public static int? Honour(int? requested, long rows, int dim, Action<string>? warn)
    {
        if (requested is not int k) return null;
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1, nameof(requested));
        if (rows < 2)
        {
            warn?.Invoke($"PCA to {k} components needs at least 2 vectors, got {rows}; skipping PCA (the vectors keep {dim} dimensions)");
            return null;
        }
        long cap = Math.Min(rows, dim);
        if (k <= cap) return k;
        warn?.Invoke($"PCA to {k} components is more than min(vectors, dimension) = min({rows}, {dim}) = {cap}; using {cap}");
        return (int)cap;
    }

    /// <summary>D, the dimension of the input vectors.</summary>
    public int InputDim { get; }

    /// <summary>k, the number of components (the output dimension of <see cref="Transform(ReadOnlySpan{float}, int, Span{float})"/>).</summary>
    public int Components => Options.Components;

    /// <summary>N, the number of rows the fit saw.</summary>
    public long Rows { get; }

    /// <summary>The options of the fit.</summary>
    public PcaOptions Options { get; }

    /// <summary>The backend the fit ran on, and the one <see cref="Transform(ReadOnlySpan{float}, int, Span{float})"/> uses
    /// (it must not have been disposed when that overload is called).</summary>
    public ComputeBackend Backend { get; }

    /// <summary>μ, f32 [D]: the column means (zeros when <see cref="PcaOptions.Center"/> is false).</summary>
    public ReadOnlySpan<float> Mean => _mean;

    /// <summary>The principal axes, f32 [k, D], row i = component i (orthonormal rows, variance descending).</summary>
    public ReadOnlySpan<float> ComponentVectors => _components;

    /// <summary>Variance of the data along each component, double [k]: σ_i² / (N − 1) (the covariance's eigenvalues).</summary>
    public ReadOnlySpan<double> ExplainedVariance => _variance;

    /// <summary><see cref="ExplainedVariance"/> / <see cref="TotalVariance"/>, double [k]; sums to at most 1 up to rounding (0 when the total is 0).</summary>
    public ReadOnlySpan<double> ExplainedVarianceRatio => _ratio;

    /// <summary>Total variance of the data, Σ_j Σ_i (x_ij − μ_j)² / (N − 1) (μ = 0 when not centred), computed from the data
    /// in double in the first pass (Chan's pairwise merge of per-chunk moments), not estimated from the sketch.</summary>
    public double TotalVariance { get; }

    /// <summary>Number of leading components found in the data; components from here on complete the basis (variance ≈ 0).</summary>
    public int Rank { get; }

    /// <summary>Diagnostics for tests: orthonormalisation rounds that fell back from Cholesky to the eigendecomposition.</summary>
    internal int EigenFallbacks { get; init; }

    /// <summary>Diagnostics for tests: sketch columns (N side) and rows (D side) refilled with fresh Gaussians after a drop.</summary>
    internal int RefilledColumns { get; init; }

    /// <summary>Fits a PCA to the rows of <paramref name="x"/>.</summary>
    /// <param name="backend">Where the GEMMs run.</param>
    /// <param name="x">The data, f32 [rows, dim], row-major; every value finite.</param>
    /// <param name="rows">N ≥ 2.</param>
    /// <param name="dim">D ≥ 1.</param>
    /// <param name="options">k, p, q, seed, centring; defaults when null.</param>
    /// <exception cref="ArgumentException">A value is NaN or infinite (the message names the row and column), or shapes disagree.</exception>
    /// <param name="cancellationToken">Checked before each pass over the data (2q + 2 passes).</param>
    /// <exception cref="ArgumentOutOfRangeException">k is outside 1..min(rows, dim), rows &lt; 2, or another option is out of range.</exception>
    public static unsafe Pca Fit(ComputeBackend backend, ReadOnlySpan<float> x, int rows, int dim, PcaOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        options ??= new PcaOptions();
        options.Validate(rows, dim);
        if (x.Length != (long)rows * dim)
            throw new ArgumentException($"x must hold rows × dim = {rows} × {dim} = {(long)rows * dim} floats, got {x.Length}", nameof(x));
        fixed (float* p = x)
        {
            nint basePtr = (nint)p;
            using var fit = new Fitter(backend, options, rows, dim,
                (first, m) => new ReadOnlySpan<float>((float*)basePtr + first * dim, m * dim), nameof(x));
            return fit.Run(cancellationToken);
        }
    }

    /// <summary>
    /// Fits a PCA to data read in chunks, for data that does not fit in memory (N = 10⁶ × D = 8192 is 32 GB of f32).
    /// Memory stays O(chunk · D + (k + p) · (N + D)). Gives the same result, bit for bit, as the span overload on the
    /// same data with the same options.
    /// </summary>
    /// <param name="backend">Where the GEMMs run.</param>
    /// <param name="rows">N ≥ 2.</param>
    /// <param name="dim">D ≥ 1.</param>
    /// <param name="read">Fills a chunk of rows; called once per chunk in each of the 2q + 2 passes, in increasing row order, from one thread.</param>
    /// <param name="options">k, p, q, seed, centring, chunk size; defaults when null.</param>
    /// <exception cref="ArgumentException">A value is NaN or infinite (the message names the row and column).</exception>
    /// <param name="cancellationToken">Checked before each pass over the data (2q + 2 passes).</param>
    /// <exception cref="ArgumentOutOfRangeException">k is outside 1..min(rows, dim), rows &lt; 2, or another option is out of range.</exception>
    public static Pca Fit(ComputeBackend backend, long rows, int dim, PcaRowReader read, PcaOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(read);
        options ??= new PcaOptions();
        options.Validate(rows, dim);
        var buffer = new float[(long)options.ResolveChunkRows(rows, dim) * dim];
        using var fit = new Fitter(backend, options, rows, dim, (first, m) =>
        {
            var chunk = buffer.AsSpan(0, m * dim);
            read(first, chunk);
            return chunk;
        }, nameof(read));
        return fit.Run(cancellationToken);
    }

    /// <summary>Projects rows onto the components on <see cref="Backend"/>: <c>output = (x − μ) Vᵀ</c>.</summary>
    /// <param name="x">f32 [rows, D], finite.</param>
    /// <param name="rows">Number of rows (≥ 0).</param>
    /// <param name="output">f32 [rows, k].</param>
    public void Transform(ReadOnlySpan<float> x, int rows, Span<float> output) => Transform(Backend, x, rows, output);

    /// <summary>
    /// Projects rows onto the components: <c>output[rows, k] = (x − μ) Vᵀ</c>, centred on the host in fp32 and multiplied
    /// on <paramref name="backend"/>'s GEMM in chunks (2·rows·D·k FLOPs; the components, 4·k·D bytes, are uploaded once per call).
    /// </summary>
    /// <param name="backend">Where the GEMM runs.</param>
    /// <param name="x">f32 [rows, D], finite.</param>
    /// <param name="rows">Number of rows (≥ 0).</param>
    /// <param name="output">f32 [rows, k].</param>
    /// <exception cref="ArgumentException">Lengths disagree or a value is not finite (the message names the row and column).</exception>
    public void Transform(ComputeBackend backend, ReadOnlySpan<float> x, int rows, Span<float> output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        int d = InputDim, k = Components;
        if (x.Length != (long)rows * d)
            throw new ArgumentException($"x must hold rows × D = {rows} × {d} floats, got {x.Length}", nameof(x));
        if (output.Length != (long)rows * k)
            throw new ArgumentException($"output must hold rows × k = {rows} × {k} floats, got {output.Length}", nameof(output));
        if (rows == 0) return;
        int chunk = Options.ResolveChunkRows(rows, d);
        var par = HostParallel(backend);
        var stage = new float[(long)chunk * d];
        using var v = backend.Upload<float>(_components);
        using var xb = backend.Allocate(DType.F32, (long)chunk * d);
        using var yb = backend.Allocate(DType.F32, (long)chunk * k);
        var vt = v.AsTensor(k, d);
        for (int first = 0; first < rows; first += chunk)
        {
            int m = Math.Min(chunk, rows - first);
            var src = x.Slice(first * d, m * d);
            for (int i = 0; i < m; i++)
            {
                var row = src.Slice(i * d, d);
                if (!float.IsFinite(TensorPrimitives.Sum(row)))
                    for (int j = 0; j < d; j++)
                        if (!float.IsFinite(row[j]))
                            throw new ArgumentException($"row {first + i}, column {j} of x is {row[j]}; PCA needs finite values", nameof(x));
            }
            Host.CentreRows(src, _mean, stage, m, d, par);
            xb.CopyFrom<float>(stage.AsSpan(0, m * d));
            var yt = new Tensor(yb, 0, m, k);
            backend.Primitives.MatMul(new Tensor(xb, 0, m, d), vt, yt);
            yb.CopyTo(output.Slice(first * k, m * k));
        }
    }

    private static ParallelOptions HostParallel(ComputeBackend backend) => new()
    {
        MaxDegreeOfParallelism = backend is CpuBackend cpu ? cpu.Threads : Environment.ProcessorCount,
    };

    /// <summary>Returns rows [first, first + m) of the data as f32 [m, D]; the span stays valid until the next call.</summary>
    private delegate ReadOnlySpan<float> ChunkSource(long first, int m);

    /// <summary>One fit: the device buffers, the host sketch Y/Q (per chunk, f32 [m, width]) and the random stream.</summary>
    private sealed class Fitter : IDisposable
    {
        // Orthonormalisation thresholds (see the class remarks).
        private const double NMinPivot = 1e-4, NMinEigen = 1e-5, DMinPivot = 1e-10, DMinEigen = 1e-12;
        private const double NearlyOrthogonal = 0.5;
        private const int MaxRounds = 6;
        /// <summary>Eigenvalues of B Bᵀ below this fraction of the largest count as outside the data's numerical rank.</summary>
        private const double RankTolerance = 1e-12;

        private readonly ComputeBackend _backend;
        private readonly PcaOptions _options;
        private readonly ChunkSource _source;
        private readonly string _argument;
        private readonly long _n;
        private readonly int _d, _k, _l, _chunk, _chunks;
        private readonly ParallelOptions _par;
        private readonly GaussianSource _rng;
        private readonly DeviceBuffer _xb, _wb, _outb, _smallb, _gb, _tb;
        private readonly float[] _stage, _small, _out, _g;
        private readonly float[][] _y;
        private int _width;
        private float[] _mean = [];
        private int _eigenFallbacks, _refilled;

        public Fitter(ComputeBackend backend, PcaOptions options, long rows, int dim, ChunkSource source, string argument)
        {
            _backend = backend;
            _options = options;
            _source = source;
            _argument = argument;
            _n = rows;
            _d = dim;
            _k = options.Components;
            _l = (int)Math.Min((long)options.Components + options.Oversampling, Math.Min(rows, dim));
            _chunk = options.ResolveChunkRows(rows, dim);
            _chunks = checked((int)((rows + _chunk - 1) / _chunk));
            _par = HostParallel(backend);
            _rng = new GaussianSource(options.Seed);
            _stage = new float[(long)_chunk * _d];
            _small = new float[(long)_chunk * _l];
            _out = new float[Math.Max((long)_chunk * _l, (long)_l * _d)];
            _g = new float[_l * _l];
            _y = new float[_chunks][];
            for (int c = 0; c < _chunks; c++) _y[c] = new float[(long)ChunkRows(c) * _l];
            try
            {
                _xb = backend.Allocate(DType.F32, (long)_chunk * _d);
                _wb = backend.Allocate(DType.F32, (long)_l * _d);
                _outb = backend.Allocate(DType.F32, _out.Length);
                _smallb = backend.Allocate(DType.F32, _small.Length);
                _gb = backend.Allocate(DType.F32, (long)_l * _l);
                _tb = backend.Allocate(DType.F32, (long)_l * _l);
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            _xb?.Dispose(); _wb?.Dispose(); _outb?.Dispose(); _smallb?.Dispose(); _gb?.Dispose(); _tb?.Dispose();
        }

        private int ChunkRows(int c) => (int)Math.Min(_chunk, _n - (long)c * _chunk);

        private Primitives Ops => _backend.Primitives;

        public Pca Run(CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var (mean, total) = FirstPass();
            OrthonormaliseN();
            for (int it = 0; it < _options.PowerIterations; it++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var (zt, r) = ProductT();
                var wt = OrthonormaliseD(zt, r, out int rw);
                cancellationToken.ThrowIfCancellationRequested();
                ProductN(wt, rw);
                OrthonormaliseN();
            }
            cancellationToken.ThrowIfCancellationRequested();
            var (b, rb) = ProductT();
            return Finish(b, rb, mean, total);
        }

        // ---- passes over X ------------------------------------------------------------------------------------

        /// <summary>Pass 0: column moments, the finiteness check, and Y = (X − 1μᵀ) Ω (via the first chunk's mean as shift).</summary>
        private (float[] Mean, double Total) FirstPass()
        {
            var omega = new float[_l * _d];                   // Ωᵀ [l, D]
            _rng.Fill(omega);
            _wb.CopyFrom<float>(omega);
            var wt = new Tensor(_wb, 0, _l, _d);
            var runMean = new double[_d];
            var runM2 = new double[_d];
            var chunkMean = new double[_d];
            var chunkM2 = new double[_d];
            var shift = new float[_d];
            long seen = 0;
            for (int c = 0; c < _chunks; c++)
            {
                int m = ChunkRows(c);
                long first = (long)c * _chunk;
                var src = _source(first, m);
                Host.ChunkMoments(src, m, _d, chunkMean, chunkM2, _par);
                for (int j = 0; j < _d; j++)
                    if (!double.IsFinite(chunkMean[j])) ThrowNonFinite(src, m, first);
                // Chan, Golub and LeVeque: merge (seen, runMean, runM2) with (m, chunkMean, chunkM2).
                long total = seen + m;
                for (int j = 0; j < _d; j++)
                {
                    double delta = chunkMean[j] - runMean[j];
                    runMean[j] += delta * m / total;
                    runM2[j] += chunkM2[j] + delta * delta * ((double)seen * m / total);
                }
                seen = total;
                if (c == 0 && _options.Center)
                    for (int j = 0; j < _d; j++) shift[j] = (float)chunkMean[j];
                Host.CentreRows(src, shift, _stage, m, _d, _par);
                _xb.CopyFrom<float>(_stage.AsSpan(0, m * _d));
                SketchChunk(wt, m, _l, _y[c]);
            }
            _width = _l;

            var mean = new float[_d];
            double totalVar = 0;
            for (int j = 0; j < _d; j++)
            {
                if (_options.Center) mean[j] = (float)runMean[j];
                totalVar += _options.Center ? runM2[j] : runM2[j] + _n * runMean[j] * runMean[j];
            }
            totalVar /= _n - 1;
            _mean = mean;
            if (_options.Center)
            {
                // Y −= 1 ((μ − s)ᵀ Ω): the chunks were centred by the first chunk's mean s, not by μ.
                var corr = new float[_l];
                for (int i = 0; i < _l; i++)
                {
                    double acc = 0;
                    for (int j = 0; j < _d; j++) acc += ((double)mean[j] - shift[j]) * omega[i * _d + j];
                    corr[i] = (float)acc;
                }
                for (int c = 0; c < _chunks; c++)
                {
                    var y = _y[c];
                    int m = ChunkRows(c);
                    for (int i = 0; i < m; i++) TensorPrimitives.Subtract(y.AsSpan(i * _l, _l), corr, y.AsSpan(i * _l, _l));
                }
            }
            return (mean, totalVar);
        }

        private void ThrowNonFinite(ReadOnlySpan<float> src, int m, long first)
        {
            for (int i = 0; i < m; i++)
                for (int j = 0; j < _d; j++)
                    if (!float.IsFinite(src[i * _d + j]))
                        throw new ArgumentException($"row {first + i}, column {j} of the input is {src[i * _d + j]}; PCA needs finite values", _argument);
            throw new InvalidOperationException("non-finite moments without a non-finite input value");
        }

        /// <summary>Y = X_c W (one pass): Wᵀ is f32 [r, D] on the host; Y chunks become [m, r].</summary>
        private void ProductN(float[] wt, int r)
        {
            _wb.CopyFrom<float>(wt.AsSpan(0, r * _d));
            var w = new Tensor(_wb, 0, r, _d);
            for (int c = 0; c < _chunks; c++)
            {
                int m = ChunkRows(c);
                var src = _source((long)c * _chunk, m);
                Host.CentreRows(src, _mean, _stage, m, _d, _par);
                _xb.CopyFrom<float>(_stage.AsSpan(0, m * _d));
                SketchChunk(w, m, r, _y[c]);
            }
            _width = r;
        }

        /// <summary>
        /// One chunk of Y = X_c W with the centred chunk already in the device buffer: computed as Yᵀ [r, m] =
        /// MatMul(Wᵀ [r, D], X_chunk [m, D]) (r = l is the short side, which the GEMM handles better as M than as N,
        /// where it pads 138 columns to 160) and transposed into <paramref name="y"/> [m, r] on the host.
        /// </summary>
        private void SketchChunk(Tensor wt, int m, int r, float[] y)
        {
            Ops.MatMul(wt, new Tensor(_xb, 0, m, _d), new Tensor(_outb, 0, r, m));
            _outb.CopyTo(_out.AsSpan(0, r * m));
            Host.CentreTranspose(_out.AsSpan(0, r * m), null, y, r, m, _par);
        }

        /// <summary>(X_cᵀ Q)ᵀ = Qᵀ X_c, double [r, D], r = current width (one pass; chunk products summed in double).</summary>
        private (double[] Zt, int R) ProductT()
        {
            int r = _width;
            var acc = new double[r * _d];
            for (int c = 0; c < _chunks; c++)
            {
                int m = ChunkRows(c);
                var src = _source((long)c * _chunk, m);
                Host.CentreTranspose(src, _mean, _stage, m, _d, _par);            // X_cᵀ [D, m]
                _xb.CopyFrom<float>(_stage.AsSpan(0, m * _d));
                Host.CentreTranspose(_y[c].AsSpan(0, m * r), null, _small, m, r, _par);   // Qᵀ [r, m]
                _smallb.CopyFrom<float>(_small.AsSpan(0, r * m));
                Ops.MatMul(new Tensor(_smallb, 0, r, m), new Tensor(_xb, 0, _d, m), new Tensor(_outb, 0, r, _d));
                _outb.CopyTo(_out.AsSpan(0, r * _d));
                Host.Accumulate(acc, _out, r * _d, _par);
            }
            return (acc, r);
        }

        // ---- orthonormalisation --------------------------------------------------------------------------------

        /// <summary>Orthonormalises the columns of Y in place (CholeskyQR2 on the GEMM, with the eigen fallback and refill).</summary>
        private void OrthonormaliseN()
        {
            var g = GramN();
            for (int round = 0; ; round++)
            {
                int r = _width;
                bool near = IsNearlyOrthogonal(g, r);
                var (tt, rNew, fallback) = OrthTransform(g, r, NMinPivot, NMinEigen);
                if (fallback) _eigenFallbacks++;
                bool last = (near && rNew == r) || round == MaxRounds - 1;
                int newWidth = !last && rNew < _l ? _l : rNew;
                _refilled += newWidth - rNew;
                g = ApplyN(tt, rNew, newWidth, gram: !last)!;
                if (last) return;
            }
        }

        /// <summary>YᵀY, double [w, w], from one GEMM per chunk on the host-transposed chunk.</summary>
        private double[] GramN()
        {
            var g = new double[_width * _width];
            for (int c = 0; c < _chunks; c++) GramChunk(_y[c], ChunkRows(c), _width, g);
            return g;
        }

        private void GramChunk(float[] y, int m, int w, double[] g)
        {
            if (w == 0) return;
            Host.CentreTranspose(y.AsSpan(0, m * w), null, _small, m, w, _par);
            _smallb.CopyFrom<float>(_small.AsSpan(0, w * m));
            var yt = new Tensor(_smallb, 0, w, m);
            Ops.MatMul(yt, yt, new Tensor(_gb, 0, w, w));
            _gb.CopyTo(_g.AsSpan(0, w * w));
            for (int i = 0; i < w * w; i++) g[i] += _g[i];
        }

        /// <summary>
        /// Y ← Y T (T = Ttᵀ, Tt double [rNew, width]) on the GEMM; when <paramref name="newWidth"/> &gt; rNew the extra
        /// columns are filled with fresh Gaussians. Returns the Gram of the result when <paramref name="gram"/>.
        /// </summary>
        private double[]? ApplyN(double[] tt, int rNew, int newWidth, bool gram)
        {
            int r = _width;
            var ttf = new float[rNew * r];
            for (int i = 0; i < ttf.Length; i++) ttf[i] = (float)tt[i];
            _tb.CopyFrom<float>(ttf);
            var t = new Tensor(_tb, 0, rNew, r);
            var g = gram ? new double[newWidth * newWidth] : null;
            for (int c = 0; c < _chunks; c++)
            {
                int m = ChunkRows(c);
                var y = _y[c];
                _smallb.CopyFrom<float>(y.AsSpan(0, m * r));
                Ops.MatMul(new Tensor(_smallb, 0, m, r), t, new Tensor(_outb, 0, m, rNew));
                if (newWidth == rNew)
                {
                    _outb.CopyTo(y.AsSpan(0, m * rNew));
                }
                else
                {
                    _outb.CopyTo(_out.AsSpan(0, m * rNew));
                    for (int i = 0; i < m; i++)
                    {
                        _out.AsSpan(i * rNew, rNew).CopyTo(y.AsSpan(i * newWidth, rNew));
                        _rng.Fill(y.AsSpan(i * newWidth + rNew, newWidth - rNew));
                    }
                }
                if (g != null) GramChunk(y, m, newWidth, g);
            }
            _width = newWidth;
            return g;
        }

        /// <summary>Orthonormalises the rows of Zt (double [r, D], host), refilling dropped rows; returns f32 [rw, D].</summary>
        private float[] OrthonormaliseD(double[] zt, int r, out int rw)
        {
            for (int round = 0; ; round++)
            {
                var g = PcaMath.GramOfRows(zt, r, _d, _par);
                bool near = IsNearlyOrthogonal(g, r);
                var (tt, rNew, fallback) = OrthTransform(g, r, DMinPivot, DMinEigen);
                if (fallback) _eigenFallbacks++;
                zt = PcaMath.CombineRows(tt, rNew, zt, r, _d, _par);
                bool last = (near && rNew == r) || round == MaxRounds - 1;
                r = rNew;
                if (last) break;
                if (r < _l)
                {
                    _refilled += _l - r;
                    Array.Resize(ref zt, _l * _d);
                    _rng.Fill(zt.AsSpan(r * _d, (_l - r) * _d));
                    r = _l;
                }
            }
            rw = r;
            var wt = new float[r * _d];
            for (int i = 0; i < wt.Length; i++) wt[i] = (float)zt[i];
            return wt;
        }

        /// <summary>
        /// Whether the vectors are orthogonal enough that one column-scaled Cholesky round leaves them orthonormal to
        /// fp32 accuracy: every row of the unit-diagonal Gram has Σ_{j≠i} |G_ij| ≤ 0.5, so by Gershgorin its eigenvalues
        /// lie in [0.5, 1.5] (condition ≤ 3).
        /// </summary>
        private static bool IsNearlyOrthogonal(double[] g, int r)
        {
            for (int i = 0; i < r; i++)
            {
                double gii = g[i * r + i], off = 0;
                if (!(gii > 0)) return false;
                for (int j = 0; j < r; j++)
                    if (j != i) off += Math.Abs(g[i * r + j]) / Math.Sqrt(gii * g[j * r + j]);
                if (!(off <= NearlyOrthogonal)) return false;
            }
            return true;
        }

        /// <summary>
        /// From the Gram matrix G [r, r] of r vectors, the combination Tt [rNew, r] whose rows give orthonormal vectors:
        /// column-scaled Cholesky (Tt = L⁻¹ S) when every pivot exceeds <paramref name="minPivot"/>, else the scaled
        /// eigendecomposition (Tt = Λ^-½ Vᵀ S) keeping eigenvalues above <paramref name="minEigen"/> · λ_max. Vectors whose
        /// squared norm is below 1e-24 of the largest (or zero) are dropped first.
        /// </summary>
        private static (double[] Tt, int RNew, bool EigenFallback) OrthTransform(double[] g, int r, double minPivot, double minEigen)
        {
            double maxd = 0;
            for (int i = 0; i < r; i++) if (double.IsFinite(g[i * r + i])) maxd = Math.Max(maxd, g[i * r + i]);
            var idx = new List<int>(r);
            for (int i = 0; i < r; i++)
            {
                double d = g[i * r + i];
                if (double.IsFinite(d) && d > 0 && d > maxd * 1e-24) idx.Add(i);
            }
            int n = idx.Count;
            if (n == 0) return ([], 0, false);
            var s = new double[n];
            for (int a = 0; a < n; a++) s[a] = 1 / Math.Sqrt(g[idx[a] * r + idx[a]]);
            var gs = new double[n * n];
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++)
                    gs[a * n + b] = g[idx[a] * r + idx[b]] * s[a] * s[b];
            var lower = new double[n * n];
            if (PcaMath.Cholesky(gs, n, minPivot, lower))
            {
                var inv = PcaMath.InvertLower(lower, n);
                var tt = new double[n * r];
                for (int j = 0; j < n; j++)
                    for (int a = 0; a <= j; a++)
                        tt[j * r + idx[a]] = inv[j * n + a] * s[a];
                return (tt, n, false);
            }
            var values = new double[n];
            var vectors = new double[n * n];
            PcaMath.SymmetricEigen(gs, n, values, vectors);
            int keep = 0;
            while (keep < n && values[keep] > minEigen * values[0]) keep++;
            var te = new double[keep * r];
            for (int j = 0; j < keep; j++)
            {
                double f = 1 / Math.Sqrt(values[j]);
                for (int a = 0; a < n; a++) te[j * r + idx[a]] = vectors[j * n + a] * s[a] * f;
            }
            return (te, keep, true);
        }

        // ---- the small SVD ---------------------------------------------------------------------------------------

        private Pca Finish(double[] b, int r, float[] mean, double total)
        {
            int k = _k, d = _d;
            var m = PcaMath.GramOfRows(b, r, d, _par);               // B Bᵀ [r, r]
            var lambda = new double[r];
            var u = new double[r * r];
            if (r > 0) PcaMath.SymmetricEigen(m, r, lambda, u);
            int rank = 0;
            while (rank < Math.Min(k, r) && lambda[rank] > 0 && lambda[rank] > RankTolerance * lambda[0]) rank++;
            // V = Λ^-½ Uᵀ B for the kept eigenpairs: rows of scaled U combine the rows of B.
            var scaled = new double[rank * r];
            for (int i = 0; i < rank; i++)
                for (int j = 0; j < r; j++) scaled[i * r + j] = u[i * r + j] / Math.Sqrt(lambda[i]);
            var v = PcaMath.CombineRows(scaled, rank, b, r, d, _par);
            Array.Resize(ref v, k * d);
            var variance = new double[k];
            for (int i = 0; i < rank; i++) variance[i] = lambda[i] / (_n - 1);
            // Re-orthonormalise in order (the leading rows are the most accurate), then complete to k rows.
            for (int i = 0; i < k; i++)
            {
                var vi = v.AsSpan(i * d, d);
                if (i >= rank) _rng.Fill(vi);
                for (int attempt = 0; ; attempt++)
                {
                    for (int pass = 0; pass < 2; pass++)
                        for (int j = 0; j < i; j++)
                        {
                            var vj = v.AsSpan(j * d, d);
                            TensorPrimitives.MultiplyAdd(vj, -TensorPrimitives.Dot<double>(vi, vj), vi, vi);
                        }
                    double norm = TensorPrimitives.Norm<double>(vi);
                    if (norm > 1e-3 || attempt == 10)
                    {
                        TensorPrimitives.Divide(vi, norm, vi);
                        break;
                    }
                    _rng.Fill(vi);
                }
                if (i >= rank)
                {
                    double sq = 0;                                     // ‖B v‖² / (N − 1): ≈ 0, reported as measured
                    for (int j = 0; j < r; j++)
                    {
                        double dot = TensorPrimitives.Dot<double>(b.AsSpan(j * d, d), vi);
                        sq += dot * dot;
                    }
                    variance[i] = sq / (_n - 1);
                }
            }
            // The completion rows are sorted among themselves; the found ones already are.
            var order = Enumerable.Range(0, k).ToArray();
            Array.Sort(order, rank, k - rank, Comparer<int>.Create((x, y) => variance[y] != variance[x] ? variance[y].CompareTo(variance[x]) : x.CompareTo(y)));
            var components = new float[k * d];
            var sortedVar = new double[k];
            for (int i = 0; i < k; i++)
            {
                var src = v.AsSpan(order[i] * d, d);
                int arg = 0;
                for (int j = 1; j < d; j++) if (Math.Abs(src[j]) > Math.Abs(src[arg])) arg = j;
                double sign = src[arg] < 0 ? -1 : 1;
                for (int j = 0; j < d; j++) components[i * d + j] = (float)(sign * src[j]);
                sortedVar[i] = variance[order[i]];
            }
            return new Pca(_backend, _options, _n, _d, mean, components, sortedVar, total, rank)
            {
                EigenFallbacks = _eigenFallbacks,
                RefilledColumns = _refilled,
            };
        }
    }

    /// <summary>Host-side chunk work, parallel over rows or column blocks: moments, centring, transposition, accumulation.</summary>
    internal static unsafe class Host
    {
        /// <summary>Per-column mean and Σ(x − mean)² of a chunk f32 [m, d], in double (two sweeps, columns in blocks of 256).</summary>
        public static void ChunkMoments(ReadOnlySpan<float> src, int m, int d, double[] mean, double[] m2, ParallelOptions par)
        {
            const int Block = 256;
            int blocks = (d + Block - 1) / Block;
            fixed (float* p = src)
            {
                nint pp = (nint)p;
                Parallel.For(0, blocks, par, bi =>
                {
                    int j0 = bi * Block, len = Math.Min(Block, d - j0);
                    var s = mean.AsSpan(j0, len);
                    var q = m2.AsSpan(j0, len);
                    s.Clear(); q.Clear();
                    float* x = (float*)pp;
                    for (int i = 0; i < m; i++) AddWidened(x + (long)i * d + j0, s);
                    TensorPrimitives.Divide(s, m, s);
                    for (int i = 0; i < m; i++) AddSquaredDeviation(x + (long)i * d + j0, s, q);
                });
            }
        }

        /// <summary>q[j] += (row[j] − mean[j])², widened to double.</summary>
        private static void AddSquaredDeviation(float* row, Span<double> mean, Span<double> q)
        {
            int j = 0;
            fixed (double* mu = mean)
            fixed (double* s = q)
            {
                for (; j + 8 <= q.Length; j += 8)
                {
                    var (lo, hi) = Vector256.Widen(Vector256.Load(row + j));
                    lo -= Vector256.Load(mu + j);
                    hi -= Vector256.Load(mu + j + 4);
                    Vector256.Store(Vector256.Load(s + j) + lo * lo, s + j);
                    Vector256.Store(Vector256.Load(s + j + 4) + hi * hi, s + j + 4);
                }
                for (; j < q.Length; j++)
                {
                    double e = row[j] - mu[j];
                    s[j] += e * e;
                }
            }
        }

        private static void AddWidened(float* row, Span<double> sum)
        {
            int j = 0;
            fixed (double* s = sum)
            {
                for (; j + 8 <= sum.Length; j += 8)
                {
                    var (lo, hi) = Vector256.Widen(Vector256.Load(row + j));
                    Vector256.Store(Vector256.Load(s + j) + lo, s + j);
                    Vector256.Store(Vector256.Load(s + j + 4) + hi, s + j + 4);
                }
                for (; j < sum.Length; j++) s[j] += row[j];
            }
        }

        /// <summary>dst[i, j] = src[i, j] − shift[j] for f32 [m, d] (shift f32 [d]).</summary>
        public static void CentreRows(ReadOnlySpan<float> src, float[] shift, float[] dst, int m, int d, ParallelOptions par)
        {
            const int Rows = 64;
            fixed (float* p = src)
            {
                nint pp = (nint)p;
                Parallel.For(0, (m + Rows - 1) / Rows, par, bi =>
                {
                    int i1 = Math.Min(m, (bi + 1) * Rows);
                    for (int i = bi * Rows; i < i1; i++)
                        TensorPrimitives.Subtract(new ReadOnlySpan<float>((float*)pp + (long)i * d, d), shift, dst.AsSpan(i * d, d));
                });
            }
        }

        /// <summary>
        /// dst[j, i] = src[i, j] − shift[j] (no shift when null): f32 [m, d] → f32 [d, m]. Parallel over blocks of 32 source
        /// columns; inside, 8 × 8 blocks are transposed in registers (AVX unpack/shuffle/permute) with a scalar edge.
        /// </summary>
        public static void CentreTranspose(ReadOnlySpan<float> src, float[]? shift, float[] dst, int m, int d, ParallelOptions par)
        {
            const int Cols = 32;
            int colBlocks = (d + Cols - 1) / Cols;
            var zero = shift ?? new float[d];
            fixed (float* p = src)
            fixed (float* q = dst)
            fixed (float* sh = zero)
            {
                nint pp = (nint)p, qq = (nint)q, ss = (nint)sh;
                Parallel.For(0, colBlocks, par, bj =>
                {
                    float* x = (float*)pp, y = (float*)qq, mu = (float*)ss;
                    int j0 = bj * Cols, j1 = Math.Min(d, j0 + Cols);
                    int jv = System.Runtime.Intrinsics.X86.Avx.IsSupported ? j0 + (j1 - j0) / 8 * 8 : j0;
                    int mv = System.Runtime.Intrinsics.X86.Avx.IsSupported ? m / 8 * 8 : 0;
                    for (int i = 0; i < mv; i += 8)
                        for (int j = j0; j < jv; j += 8)
                            Transpose8x8(x + (long)i * d + j, d, mu + j, y + (long)j * m + i, m);
                    for (int j = j0; j < j1; j++)
                    {
                        float sj = mu[j];
                        float* yj = y + (long)j * m;
                        int start = j < jv ? mv : 0;
                        for (int i = start; i < m; i++) yj[i] = x[(long)i * d + j] - sj;
                    }
                });
            }
        }

        /// <summary>8 × 8 block: out[c, r] = in[r, c] − shift[c], AVX (Intel's _MM_TRANSPOSE8_PS sequence).</summary>
        private static void Transpose8x8(float* input, int inStride, float* shift, float* output, int outStride)
        {
            var mu = Vector256.Load(shift);
            var r0 = Vector256.Load(input) - mu;
            var r1 = Vector256.Load(input + inStride) - mu;
            var r2 = Vector256.Load(input + 2L * inStride) - mu;
            var r3 = Vector256.Load(input + 3L * inStride) - mu;
            var r4 = Vector256.Load(input + 4L * inStride) - mu;
            var r5 = Vector256.Load(input + 5L * inStride) - mu;
            var r6 = Vector256.Load(input + 6L * inStride) - mu;
            var r7 = Vector256.Load(input + 7L * inStride) - mu;
            var t0 = System.Runtime.Intrinsics.X86.Avx.UnpackLow(r0, r1);
            var t1 = System.Runtime.Intrinsics.X86.Avx.UnpackHigh(r0, r1);
            var t2 = System.Runtime.Intrinsics.X86.Avx.UnpackLow(r2, r3);
            var t3 = System.Runtime.Intrinsics.X86.Avx.UnpackHigh(r2, r3);
            var t4 = System.Runtime.Intrinsics.X86.Avx.UnpackLow(r4, r5);
            var t5 = System.Runtime.Intrinsics.X86.Avx.UnpackHigh(r4, r5);
            var t6 = System.Runtime.Intrinsics.X86.Avx.UnpackLow(r6, r7);
            var t7 = System.Runtime.Intrinsics.X86.Avx.UnpackHigh(r6, r7);
            var u0 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t0, t2, 0x44);
            var u1 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t0, t2, 0xEE);
            var u2 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t1, t3, 0x44);
            var u3 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t1, t3, 0xEE);
            var u4 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t4, t6, 0x44);
            var u5 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t4, t6, 0xEE);
            var u6 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t5, t7, 0x44);
            var u7 = System.Runtime.Intrinsics.X86.Avx.Shuffle(t5, t7, 0xEE);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u0, u4, 0x20), output);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u1, u5, 0x20), output + outStride);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u2, u6, 0x20), output + 2L * outStride);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u3, u7, 0x20), output + 3L * outStride);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u0, u4, 0x31), output + 4L * outStride);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u1, u5, 0x31), output + 5L * outStride);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u2, u6, 0x31), output + 6L * outStride);
            Vector256.Store(System.Runtime.Intrinsics.X86.Avx.Permute2x128(u3, u7, 0x31), output + 7L * outStride);
        }

        /// <summary>acc[0..n) += add[0..n) (f32 widened to double).</summary>
        public static void Accumulate(double[] acc, float[] add, int n, ParallelOptions par)
        {
            const int Block = 1 << 14;
            Parallel.For(0, (n + Block - 1) / Block, par, bi =>
            {
                int i0 = bi * Block, len = Math.Min(Block, n - i0);
                fixed (float* a = &add[i0])
                    AddWidened(a, acc.AsSpan(i0, len));
            });
        }
    }
}
