namespace Rellax.Kernels;

/// <summary>
/// The transformer primitives a Llama-family forward pass needs, on one backend. Every method checks its
/// arguments (dtype, shape, owning backend) and throws <see cref="ArgumentException"/> naming the argument
/// and the shapes before any kernel runs. All floating tensors are f32; ids and positions are i32.
/// Work may be queued asynchronously: read results through <see cref="DeviceBuffer.CopyTo{T}"/>, which waits.
/// </summary>
public sealed class Primitives
{
    private readonly ComputeBackend _backend;

    internal Primitives(ComputeBackend backend) => _backend = backend;

    private IPrimitiveKernels K => _backend.PrimitiveKernels;

    /// <summary>Linear layer without bias: <c>y = x Wᵀ</c>.</summary>
    /// <param name="x">Input, f32 [M, K].</param>
    /// <param name="w">Weight as stored in HF files, f32 [N, K] (out features × in features).</param>
    /// <param name="y">Output, f32 [M, N]; must not overlap x or w.</param>
    public void MatMul(Tensor x, Tensor w, Tensor y)
    {
        Check.F32(_backend, x, nameof(x), 2); Check.F32(_backend, w, nameof(w), 2); Check.F32(_backend, y, nameof(y), 2);
        if (x.Dim(1) != w.Dim(1) || y.Dim(0) != x.Dim(0) || y.Dim(1) != w.Dim(0))
            throw new ArgumentException($"MatMul needs x [M, K], w [N, K], y [M, N]; got x {x}, w {w}, y {y}", nameof(w));
        Check.NoOverlap(y, nameof(y), x, nameof(x)); Check.NoOverlap(y, nameof(y), w, nameof(w));
        if (y.ElementCount == 0) return;
        K.MatMulTransposed(x, w, y);
    }

    /// <summary>
    /// Linear layer <c>y = x Wᵀ (+ bias)</c> with the weight kept in its checkpoint dtype: f16 and bf16 weights are
    /// widened on the fly (fp32 accumulation), so a half-precision model needs no f32 copy of its weights.
    /// </summary>
    /// <param name="x">Input, f32 [M, K].</param>
    /// <param name="w">Weight as stored in HF files, f32, f16 or bf16 [N, K] (out features × in features).</param>
    /// <param name="bias">Optional f32 bias [N] (Qwen2's q/k/v projections), or <see langword="null"/>.</param>
    /// <param name="y">Output, f32 [M, N]; must not overlap x, w or bias.</param>
    public void Linear(Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        Check.F32(_backend, x, nameof(x), 2); Check.Floating(_backend, w, nameof(w), 2); Check.F32(_backend, y, nameof(y), 2);
        if (x.Dim(1) != w.Dim(1) || y.Dim(0) != x.Dim(0) || y.Dim(1) != w.Dim(0))
            throw new ArgumentException($"Linear needs x [M, K], w [N, K], y [M, N]; got x {x}, w {w}, y {y}", nameof(w));
        Check.NoOverlap(y, nameof(y), x, nameof(x)); Check.NoOverlap(y, nameof(y), w, nameof(w));
        if (bias is { } b)
        {
            Check.F32(_backend, b, nameof(bias), 1);
            if (b.Dim(0) != w.Dim(0)) throw new ArgumentException($"bias {b} must be [N] = [{w.Dim(0)}] for w {w}", nameof(bias));
            Check.NoOverlap(y, nameof(y), b, nameof(bias));
        }
        if (y.ElementCount == 0) return;
        K.Linear(x, w, bias, y);
    }

    /// <summary>Most input columns (K) an int8 weight may have: K·127² must fit in i32 for the integer sums to be exact.</summary>
    public const int MaxInt8Columns = 131072;

    /// <summary>
    /// Input columns per activation scale group of the int8 linear layer (<see cref="LinearInt8"/>): each row of x gets one int8
    /// scale per 64 consecutive columns instead of one for the whole row (the per-row scale was the main p_yes error on the
    /// scoring model's MLP; 64 measured best of 32/64/128/256, see <c>benchmarks/results/int8-weights.md</c>).
    /// </summary>
    public const int DefaultInt8GroupSize = 64;

    /// <summary>Largest activation group size: each group's i32 sum must be exact in f32 and its weight sum fit in i16.</summary>
    public const int MaxInt8GroupSize = 256;

    /// <summary>Default LLM.int8() outlier threshold: input columns with some |x| above it stay in fp32 (as bitsandbytes).</summary>
    public const float DefaultOutlierThreshold = 6f;

    /// <summary>
    /// Quantizes a linear layer's weight to int8, symmetric per output row (see <see cref="Int8Weights"/>): 1 byte per
    /// element plus one f32 scale per row. The source may be freed afterwards.
    /// </summary>
    /// <param name="w">Weight as stored in HF files, f32, f16 or bf16 [N, K]; every element finite.</param>
    /// <returns>The quantized weight on this backend; the caller owns (disposes) it.</returns>
    /// <exception cref="ArgumentException">w has the wrong dtype or rank, more than <see cref="MaxInt8Columns"/> columns, or a row
    /// holds NaN or infinity (the row is named).</exception>
    /// <exception cref="NotSupportedException">This backend has no int8 linear kernels (only the CPU backend has them so far).</exception>
    public Int8Weights QuantizeInt8(Tensor w) => QuantizeInt8(w, DefaultInt8GroupSize);

    /// <summary>
    /// <see cref="QuantizeInt8(Tensor)"/> with another activation group size: <see cref="LinearInt8"/> will quantize each row of
    /// x with one scale per <paramref name="groupSize"/> consecutive input columns (smaller groups: finer activation steps, a
    /// little more f32 work per group). Used by tests and the accuracy diagnosis.
    /// </summary>
    /// <param name="w">As in <see cref="QuantizeInt8(Tensor)"/>.</param>
    /// <param name="groupSize">A multiple of 4 in [4, <see cref="MaxInt8GroupSize"/>].</param>
    /// <returns>The quantized weight on this backend; the caller owns (disposes) it.</returns>
    public Int8Weights QuantizeInt8(Tensor w, int groupSize)
    {
        Check.Floating(_backend, w, nameof(w), 2);
        if (w.Dim(1) > MaxInt8Columns)
            throw new ArgumentException($"w {w} has {w.Dim(1)} input columns; int8 sums are exact in i32 only up to {MaxInt8Columns}", nameof(w));
        if (groupSize < 4 || groupSize > MaxInt8GroupSize || groupSize % 4 != 0)
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, $"the int8 activation group size must be a multiple of 4 in [4, {MaxInt8GroupSize}]");
        return _backend.Int8LinearKernels.Quantize(w, groupSize);
    }

    /// <summary>
    /// Linear layer with int8 weights, LLM.int8()-style (W8A8 with outlier decomposition):
    /// <c>y = x · dequant(w)ᵀ (+ bias)</c>, where each row of x is quantized to int8 with one scale (max |x| / 127) per group of
    /// <see cref="Int8Weights.GroupSize"/> consecutive input columns, the int8 products of each group are summed exactly in
    /// i32 and rescaled in f32, and input columns whose largest |x| over the rows exceeds
    /// <paramref name="outlierThreshold"/> are left out of the int8 product and multiplied in fp32 with the dequantized
    /// weights. <see cref="PrimitivesReference.LinearInt8"/> is the exact definition. A row of x holding NaN outside the
    /// outlier columns gives a NaN output row.
    /// </summary>
    /// <param name="x">Input, f32 [M, K].</param>
    /// <param name="w">Quantized weight [N, K] from <see cref="QuantizeInt8(Tensor)"/> on this backend.</param>
    /// <param name="bias">Optional f32 bias [N], or <see langword="null"/>.</param>
    /// <param name="y">Output, f32 [M, N]; must not overlap x or bias.</param>
    /// <param name="outlierThreshold">Magnitude above which an input column goes through fp32; finite and &gt; 0
    /// (default <see cref="DefaultOutlierThreshold"/>).</param>
    public void LinearInt8(Tensor x, Int8Weights w, Tensor? bias, Tensor y, float outlierThreshold = DefaultOutlierThreshold)
    {
        ArgumentNullException.ThrowIfNull(w);
        ObjectDisposedException.ThrowIf(w.IsDisposed, w);
        Check.F32(_backend, x, nameof(x), 2); Check.F32(_backend, y, nameof(y), 2);
        if (!ReferenceEquals(w.Backend, _backend))
            throw new ArgumentException($"w {w} lives on backend '{w.Backend.Name}', not '{_backend.Name}'", nameof(w));
        if (x.Dim(1) != w.Cols || y.Dim(0) != x.Dim(0) || y.Dim(1) != w.Rows)
            throw new ArgumentException($"LinearInt8 needs x [M, K], w [N, K], y [M, N]; got x {x}, w {w}, y {y}", nameof(w));
        CheckOutlierThreshold(outlierThreshold);
        Check.NoOverlap(y, nameof(y), x, nameof(x));
        if (bias is { } b)
        {
            Check.F32(_backend, b, nameof(bias), 1);
            if (b.Dim(0) != w.Rows) throw new ArgumentException($"bias {b} must be [N] = [{w.Rows}] for w {w}", nameof(bias));
            Check.NoOverlap(y, nameof(y), b, nameof(bias));
        }
        if (y.ElementCount == 0) return;
        _backend.Int8LinearKernels.Linear(x, w, bias, y, outlierThreshold);
    }

    /// <summary>Embedding gather from an int8 table: <c>y[t] = dequant(table)[ids[t]] = q[ids[t]] · scale[ids[t]]</c>.</summary>
    /// <param name="ids">Token ids (or any row indices), i32 [T]; each in [0, V) (the CPU backend throws on one outside).</param>
    /// <param name="table">Quantized table [V, H] from <see cref="QuantizeInt8(Tensor)"/> on this backend.</param>
    /// <param name="y">Output, f32 [T, H].</param>
    public void EmbeddingInt8(Tensor ids, Int8Weights table, Tensor y)
    {
        ArgumentNullException.ThrowIfNull(table);
        ObjectDisposedException.ThrowIf(table.IsDisposed, table);
        Check.Of(_backend, ids, nameof(ids), DType.I32, 1); Check.F32(_backend, y, nameof(y), 2);
        if (!ReferenceEquals(table.Backend, _backend))
            throw new ArgumentException($"table {table} lives on backend '{table.Backend.Name}', not '{_backend.Name}'", nameof(table));
        if (y.Dim(0) != ids.Dim(0) || y.Dim(1) != table.Cols)
            throw new ArgumentException($"EmbeddingInt8 needs ids [T], table [V, H], y [T, H]; got ids {ids}, table {table}, y {y}", nameof(y));
        if (y.ElementCount == 0) return;
        _backend.Int8LinearKernels.Embedding(ids, table, y);
    }

    /// <summary>Throws unless <paramref name="outlierThreshold"/> is a finite number &gt; 0.</summary>
    public static void CheckOutlierThreshold(float outlierThreshold)
    {
        if (!(outlierThreshold > 0) || !float.IsFinite(outlierThreshold))
            throw new ArgumentOutOfRangeException(nameof(outlierThreshold), outlierThreshold, "the int8 outlier threshold must be a finite number > 0");
    }

    /// <summary>Row scatter: <c>dst[rows[i]] = src[i]</c> (SPA writes projected CRM embeddings over the marker positions).</summary>
    /// <param name="src">Rows to write, f32 [n, H].</param>
    /// <param name="rows">Destination row of each, i32 [n]; each in [0, R) and all distinct (checked on the device side where
    /// possible; the CPU backend throws on an out-of-range row).</param>
    /// <param name="dst">Updated in place, f32 [R, H]; must not overlap src.</param>
    public void ScatterRows(Tensor src, Tensor rows, Tensor dst)
    {
        Check.F32(_backend, src, nameof(src), 2); Check.Of(_backend, rows, nameof(rows), DType.I32, 1); Check.F32(_backend, dst, nameof(dst), 2);
        if (rows.Dim(0) != src.Dim(0) || src.Dim(1) != dst.Dim(1))
            throw new ArgumentException($"ScatterRows needs src [n, H], rows [n], dst [R, H]; got src {src}, rows {rows}, dst {dst}", nameof(src));
        Check.NoOverlap(dst, nameof(dst), src, nameof(src));
        if (src.ElementCount == 0) return;
        K.ScatterRows(src, rows, dst);
    }

    /// <summary>RMSNorm over the last axis: <c>y = x / sqrt(mean(x²) + eps) · weight</c>.</summary>
    /// <param name="x">Input, f32 [..., N].</param>
    /// <param name="weight">Scale, f32 [N].</param>
    /// <param name="eps">Added to the mean square; must be finite and &gt;= 0.</param>
    /// <param name="y">Output, same shape as x; may be x itself.</param>
    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, weight, nameof(weight), 1); Check.F32(_backend, y, nameof(y));
        Check.SameShape(x, nameof(x), y, nameof(y));
        Check.LastDim(weight, nameof(weight), x);
        Check.Eps(eps);
        if (x.ElementCount == 0) return;
        K.RmsNorm(x, weight, eps, y);
    }

    /// <summary>LayerNorm over the last axis (biased variance): <c>y = (x - mean) / sqrt(var + eps) · weight + bias</c>.</summary>
    /// <param name="x">Input, f32 [..., N].</param>
    /// <param name="weight">Scale, f32 [N].</param>
    /// <param name="bias">Shift, f32 [N].</param>
    /// <param name="eps">Added to the variance; must be finite and &gt;= 0.</param>
    /// <param name="y">Output, same shape as x; may be x itself.</param>
    public void LayerNorm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor y)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, weight, nameof(weight), 1);
        Check.F32(_backend, bias, nameof(bias), 1); Check.F32(_backend, y, nameof(y));
        Check.SameShape(x, nameof(x), y, nameof(y));
        Check.LastDim(weight, nameof(weight), x); Check.LastDim(bias, nameof(bias), x);
        Check.Eps(eps);
        if (x.ElementCount == 0) return;
        K.LayerNorm(x, weight, bias, eps, y);
    }

    /// <summary>
    /// Rotary position embedding in Hugging Face <c>rotate_half</c> layout, in place: for each head and
    /// i &lt; D/2, the pair (x[i], x[i + D/2]) is rotated by the angle at (position, i).
    /// </summary>
    /// <param name="x">Queries or keys, f32 [T, H, D] with D even; overwritten.</param>
    /// <param name="positions">Absolute position of each token, i32 [T], each in [0, P).</param>
    /// <param name="cos">cos of the angles, f32 [P, D/2] (see <see cref="RopeTables"/>).</param>
    /// <param name="sin">sin of the angles, f32 [P, D/2].</param>
    public void Rope(Tensor x, Tensor positions, Tensor cos, Tensor sin)
    {
        Check.Rope(_backend, x, nameof(x), positions, cos, sin);
        if (x.ElementCount == 0) return;
        K.Rope(x, positions, cos, sin);
    }

    /// <summary>SwiGLU gate: <c>y = silu(gate) · up</c>, with silu(g) = g / (1 + e^-g).</summary>
    /// <param name="gate">f32 [..., N].</param>
    /// <param name="up">f32, same shape as gate.</param>
    /// <param name="y">Output, same shape; may be gate or up.</param>
    public void SwiGlu(Tensor gate, Tensor up, Tensor y)
    {
        Check.F32(_backend, gate, nameof(gate)); Check.F32(_backend, up, nameof(up)); Check.F32(_backend, y, nameof(y));
        Check.SameShape(gate, nameof(gate), up, nameof(up)); Check.SameShape(gate, nameof(gate), y, nameof(y));
        if (y.ElementCount == 0) return;
        K.SwiGlu(gate, up, y);
    }

    /// <summary>Exact GELU: <c>y = x · Φ(x) = x/2 · (1 + erf(x/√2))</c>, elementwise.</summary>
    /// <param name="x">f32, any shape.</param>
    /// <param name="y">Output, same shape; may be x.</param>
    public void Gelu(Tensor x, Tensor y)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, y, nameof(y));
        Check.SameShape(x, nameof(x), y, nameof(y));
        if (y.ElementCount == 0) return;
        K.Gelu(x, y);
    }

    /// <summary>Numerically stable softmax over the last axis.</summary>
    /// <param name="x">f32 [..., N] with N &gt;= 1.</param>
    /// <param name="y">Output, same shape; may be x.</param>
    public void Softmax(Tensor x, Tensor y)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, y, nameof(y));
        Check.SameShape(x, nameof(x), y, nameof(y));
        if (x.Dim(-1) == 0 && x.ElementCount == 0 && x.Rows > 0) throw new ArgumentException($"softmax over an empty axis: x is {x}", nameof(x));
        if (y.ElementCount == 0) return;
        K.Softmax(x, y);
    }

    /// <summary>Embedding gather: <c>y[t] = table[ids[t]]</c>.</summary>
    /// <param name="ids">Token ids, i32 [T]; each in [0, V) (checked on the device side where possible; the CPU backend throws).</param>
    /// <param name="table">Embedding table, f32, f16 or bf16 [V, H] (half-precision rows are widened to f32). Any row
    /// table works, so this is also the general row gather (e.g. the last position of each sequence).</param>
    /// <param name="y">Output, f32 [T, H].</param>
    public void Embedding(Tensor ids, Tensor table, Tensor y)
    {
        Check.Of(_backend, ids, nameof(ids), DType.I32, 1); Check.Floating(_backend, table, nameof(table), 2); Check.F32(_backend, y, nameof(y), 2);
        if (y.Dim(0) != ids.Dim(0) || y.Dim(1) != table.Dim(1))
            throw new ArgumentException($"Embedding needs ids [T], table [V, H], y [T, H]; got ids {ids}, table {table}, y {y}", nameof(y));
        if (y.ElementCount == 0) return;
        K.Embedding(ids, table, y);
    }

    /// <summary>Elementwise sum <c>y = a + b</c> (the residual add).</summary>
    /// <param name="a">f32, any shape.</param>
    /// <param name="b">f32, same shape as a.</param>
    /// <param name="y">Output, same shape; may be a or b.</param>
    public void Add(Tensor a, Tensor b, Tensor y)
    {
        Check.F32(_backend, a, nameof(a)); Check.F32(_backend, b, nameof(b)); Check.F32(_backend, y, nameof(y));
        Check.SameShape(a, nameof(a), b, nameof(b)); Check.SameShape(a, nameof(a), y, nameof(y));
        if (y.ElementCount == 0) return;
        K.Add(a, b, y);
    }
}
