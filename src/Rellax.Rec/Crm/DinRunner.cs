using System.Numerics.Tensors;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Tensor = Rellax.Kernels.Tensor;

namespace Rellax.Rec;

/// <summary>
/// The batched DIN forward of <see cref="DinModel"/>: gathers and elementwise work on host arrays with
/// <see cref="TensorPrimitives"/>, every matrix product through <see cref="Primitives.Linear"/> of the caller's
/// <see cref="ComputeBackend"/> (on a <see cref="CpuBackend"/>, the hand-written SIMD GEMM over its threads; on a GPU
/// backend, each product's input and output are copied to and from the device). The runner uploads the model's weights
/// to that backend and frees them on <see cref="Dispose"/>; it never owns or disposes the backend. One chunk of samples
/// at a time; scratch arrays grow to the largest chunk and are reused.
/// </summary>
/// <remarks>
/// The first attention layer is not applied to the concatenation [t; h; t - h; t * h] [P, 4E] as written. With its weight
/// split in column blocks W = [W_t | W_h | W_d | W_p] (each [A, E]),
/// <c>W [t; h; t - h; t * h] = (W_t + W_d) t + (W_h - W_d) h + W_p (t * h)</c>:
/// the t part is computed once per sample ([B, E] x [E, A]) and the rest is one product [P, 2E] x [2E, A] over
/// [h; t * h], half the multiply-adds of the literal form. The result differs from it only by float rounding.
/// </remarks>
internal sealed class DinRunner : IDisposable
{
    /// <summary>Samples per chunk: at 30 history events, about 15k history rows (a few MB of scratch at E = 32, about
    /// 40 MB at E = 64 with 256-wide attention). Not thread-safe: one runner per thread.</summary>
    public const int ChunkSamples = 512;

    private readonly ComputeBackend _backend;
    private readonly List<DeviceBuffer> _owned = [];
    private readonly float[] _table;
    private readonly int _e, _fields, _itemField, _towerIn, _dh;
    private readonly int[] _att, _tower;
    private readonly Tensor _mapW, _mapB, _attTargetW, _attB0, _attHistW;
    private readonly Tensor[] _attW, _attB, _towerW, _towerB;   // attention layers 1.. (index 0 unused); tower layers
    private readonly float[] _scoreW, _outW;
    private readonly float _scoreB, _outB;
    private DeviceBuffer? _x, _y;
    private float[] _targets = [], _towerInput = [], _histIn = [], _hist = [], _z = [], _a = [], _a2 = [], _c = [], _t1 = [], _t2 = [];

    /// <summary>Uploads the model's weights (the first attention layer split as in the remarks) to <paramref name="backend"/>.</summary>
    /// <param name="model">The model whose weights the runner uploads.</param>
    /// <param name="backend">Runs the products; the caller's, not disposed by the runner.</param>
    public DinRunner(DinModel model, ComputeBackend backend)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(backend);
        _backend = backend;
        var config = model.Config;
        _e = config.EmbedDim;
        _fields = config.Fields.Count;
        _itemField = config.ItemFieldIndex;
        _towerIn = config.TowerInputDim;
        _dh = config.StateDim;
        _att = [.. config.AttentionSizes];
        _tower = [.. config.TowerSizes];
        _table = model.Weight(DinModel.TableName);
        try
        {
            _mapW = Upload(model.Weight(DinModel.MapWeight), _e, 2 * _e);
            _mapB = Upload(model.Weight(DinModel.MapBias), _e);
            // Split the first attention layer [A0, 4E] into its t part (W_t + W_d) [A0, E] and its [h; t*h] part
            // [W_h - W_d | W_p] [A0, 2E].
            int a0 = _att[0];
            var targetPart = new float[a0 * _e];
            var histPart = new float[a0 * 2 * _e];
            SplitFirstAttentionLayer(model.Weight(DinModel.AttentionWeight(0)), a0, _e, targetPart, histPart);
            _attTargetW = Upload(targetPart, a0, _e);
            _attHistW = Upload(histPart, a0, 2 * _e);
            _attB0 = Upload(model.Weight(DinModel.AttentionBias(0)), a0);
            _attW = new Tensor[_att.Length];
            _attB = new Tensor[_att.Length];
            for (int i = 1; i < _att.Length; i++)
            {
                _attW[i] = Upload(model.Weight(DinModel.AttentionWeight(i)), _att[i], _att[i - 1]);
                _attB[i] = Upload(model.Weight(DinModel.AttentionBias(i)), _att[i]);
            }
            _towerW = new Tensor[_tower.Length];
            _towerB = new Tensor[_tower.Length];
            for (int i = 0; i < _tower.Length; i++)
            {
                _towerW[i] = Upload(model.Weight(DinModel.TowerWeight(i)), _tower[i], i == 0 ? _towerIn : _tower[i - 1]);
                _towerB[i] = Upload(model.Weight(DinModel.TowerBias(i)), _tower[i]);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        _scoreW = model.Weight(DinModel.ScoreWeight);
        _scoreB = model.Weight(DinModel.ScoreBias)[0];
        _outW = model.Weight(DinModel.OutWeight);
        _outB = model.Weight(DinModel.OutBias)[0];
    }

    /// <summary>
    /// Splits the first attention layer's weight W [A0, 4E] = [W_t | W_h | W_d | W_p] into its t part W_t + W_d [A0, E]
    /// and its [h; t*h] part [W_h - W_d | W_p] [A0, 2E] (the factored form of the class remarks; the trainer uses it too).
    /// </summary>
    internal static void SplitFirstAttentionLayer(ReadOnlySpan<float> w0, int a0, int e, Span<float> targetPart, Span<float> histPart)
    {
        for (int o = 0; o < a0; o++)
        {
            var row = w0.Slice(o * 4 * e, 4 * e);
            var wt = row[..e];
            var wh = row[e..(2 * e)];
            var wd = row[(2 * e)..(3 * e)];
            var wp = row[(3 * e)..];
            TensorPrimitives.Add(wt, wd, targetPart.Slice(o * e, e));
            TensorPrimitives.Subtract(wh, wd, histPart.Slice(o * 2 * e, e));
            wp.CopyTo(histPart.Slice(o * 2 * e + e, e));
        }
    }

    /// <summary>Copies <paramref name="data"/> to the backend as a tensor of <paramref name="shape"/> (freed on Dispose).</summary>
    private Tensor Upload(float[] data, params int[] shape)
    {
        var buffer = _backend.Upload<float>(data);
        _owned.Add(buffer);
        return buffer.AsTensor(shape);
    }

    /// <summary>The first <paramref name="length"/> floats of <paramref name="array"/>, reallocated when too short.</summary>
    private static Span<float> Scratch(ref float[] array, long length)
    {
        if (array.Length < length) array = new float[length];
        return array.AsSpan(0, (int)length);
    }

    /// <summary>y [rows, n] = x [rows, k] Wᵀ (+ bias) through the backend's GEMM.</summary>
    private void Linear(ReadOnlySpan<float> x, int rows, int k, Tensor w, Tensor? bias, Span<float> y)
    {
        int n = w.Dim(0);
        if (rows == 0) return;
        if (_x is null || _x.Length < (long)rows * k) { _x?.Dispose(); _x = _backend.Allocate(DType.F32, Math.Max((long)rows * k, 1 << 16)); }
        if (_y is null || _y.Length < (long)rows * n) { _y?.Dispose(); _y = _backend.Allocate(DType.F32, Math.Max((long)rows * n, 1 << 16)); }
        _x.CopyFrom(x[..(rows * k)]);
        _backend.Primitives.Linear(new Tensor(_x, 0, rows, k), w, bias, new Tensor(_y, 0, rows, n));
        _y.CopyTo(y[..(rows * n)]);
    }

    /// <summary>x = max(x, 0) in place.</summary>
    private static void Relu(Span<float> x) => TensorPrimitives.Max(x, 0f, x);

    /// <summary>One chunk: the inputs and outputs of <see cref="DinModel.Forward"/> (already checked).</summary>
    public void Run(ReadOnlySpan<int> fieldRows, ReadOnlySpan<int> starts, ReadOnlySpan<int> itemRows, ReadOnlySpan<int> ratingRows,
        Span<float> states, Span<float> logits)
    {
        int positions = starts[^1];
        var hist = Scratch(ref _hist, (long)positions * _e);
        MapHistory(itemRows, ratingRows, hist);
        Attend(fieldRows, starts, hist, states, logits);
    }

    /// <summary>
    /// One chunk whose history embeddings come from a precomputed table (<see cref="MapHistory"/> applied once to every
    /// distinct (item, rating) pair): position j uses row <paramref name="pairRows"/>[j] of <paramref name="pairTable"/>.
    /// </summary>
    /// <param name="fieldRows">[B, F] table rows of the fields.</param>
    /// <param name="starts">[B + 1] history offsets (from 0).</param>
    /// <param name="pairRows">[P] row of each position's history embedding in <paramref name="pairTable"/>.</param>
    /// <param name="pairTable">[Q, E] history embeddings h.</param>
    /// <param name="states">[B, d_h] output.</param>
    /// <param name="logits">[B] output.</param>
    public void RunWithPairs(ReadOnlySpan<int> fieldRows, ReadOnlySpan<int> starts, ReadOnlySpan<int> pairRows, ReadOnlySpan<float> pairTable,
        Span<float> states, Span<float> logits)
    {
        int positions = starts[^1], e = _e;
        var hist = Scratch(ref _hist, (long)positions * e);
        for (int j = 0; j < positions; j++) pairTable.Slice(pairRows[j] * e, e).CopyTo(hist.Slice(j * e, e));
        Attend(fieldRows, starts, hist, states, logits);
    }

    /// <summary>History embeddings h = ReLU(W_m [T[item]; T[rating]] + b_m) for P (item row, rating row) pairs.</summary>
    /// <param name="itemRows">[P] table rows of the items.</param>
    /// <param name="ratingRows">[P] table rows of the ratings.</param>
    /// <param name="hist">[P, E] output.</param>
    public void MapHistory(ReadOnlySpan<int> itemRows, ReadOnlySpan<int> ratingRows, Span<float> hist)
    {
        int positions = itemRows.Length, e = _e;
        ReadOnlySpan<float> table = _table;
        var histIn = Scratch(ref _histIn, (long)positions * 2 * e);
        for (int j = 0; j < positions; j++)
        {
            table.Slice(itemRows[j] * e, e).CopyTo(histIn.Slice(j * 2 * e, e));
            table.Slice(ratingRows[j] * e, e).CopyTo(histIn.Slice(j * 2 * e + e, e));
        }
        Linear(histIn, positions, 2 * e, _mapW, _mapB, hist);
        Relu(hist[..(positions * e)]);
    }

    /// <summary>The rest of the forward, given the history embeddings <paramref name="hist"/> [P, E] of the chunk.</summary>
    private void Attend(ReadOnlySpan<int> fieldRows, ReadOnlySpan<int> starts, ReadOnlySpan<float> hist, Span<float> states, Span<float> logits)
    {
        int batch = starts.Length - 1, positions = starts[batch], e = _e;
        ReadOnlySpan<float> table = _table;

        // Field embeddings into the tower input [B, (F+1)E]; the target item's embedding into targets [B, E].
        var towerInput = Scratch(ref _towerInput, (long)batch * _towerIn);
        var targets = Scratch(ref _targets, (long)batch * e);
        for (int b = 0; b < batch; b++)
        {
            for (int f = 0; f < _fields; f++)
                table.Slice(fieldRows[b * _fields + f] * e, e).CopyTo(towerInput.Slice(b * _towerIn + f * e, e));
            table.Slice(fieldRows[b * _fields + _itemField] * e, e).CopyTo(targets.Slice(b * e, e));
        }

        // Attention layer 0: (W_t + W_d) t + b per sample, plus [W_h - W_d | W_p] [h; t*h] per position.
        int a0 = _att[0];
        var c = Scratch(ref _c, (long)batch * a0);
        Linear(targets, batch, e, _attTargetW, _attB0, c);
        var z = Scratch(ref _z, (long)positions * 2 * e);
        for (int b = 0; b < batch; b++)
        {
            var t = targets.Slice(b * e, e);
            for (int j = starts[b]; j < starts[b + 1]; j++)
            {
                var h = hist.Slice(j * e, e);
                h.CopyTo(z.Slice(j * 2 * e, e));
                TensorPrimitives.Multiply(t, h, z.Slice(j * 2 * e + e, e));
            }
        }
        var a = Scratch(ref _a, (long)positions * a0);
        Linear(z, positions, 2 * e, _attHistW, null, a);
        for (int b = 0; b < batch; b++)
        {
            var cb = c.Slice(b * a0, a0);
            for (int j = starts[b]; j < starts[b + 1]; j++)
            {
                var row = a.Slice(j * a0, a0);
                TensorPrimitives.Add(row, cb, row);
            }
        }
        Relu(a);
        int width = a0;
        for (int i = 1; i < _att.Length; i++)
        {
            var next = Scratch(ref _a2, (long)positions * _att[i]);
            Linear(a, positions, width, _attW[i], _attB[i], next);
            Relu(next);
            (_a, _a2) = (_a2, _a);
            a = next;
            width = _att[i];
        }

        // Scores (no softmax) and the weighted sum u into the last E columns of the tower input.
        for (int b = 0; b < batch; b++)
        {
            var u = towerInput.Slice(b * _towerIn + _fields * e, e);
            u.Clear();
            for (int j = starts[b]; j < starts[b + 1]; j++)
            {
                float score = TensorPrimitives.Dot(a.Slice(j * width, width), _scoreW) + _scoreB;
                TensorPrimitives.MultiplyAdd(hist.Slice(j * e, e), score, u, u);
            }
        }

        // Tower: ReLU after every layer; the last layer is h_u. Then the logit.
        ReadOnlySpan<float> input = towerInput;
        int inWidth = _towerIn;
        for (int i = 0; i < _tower.Length; i++)
        {
            var output = i % 2 == 0 ? Scratch(ref _t1, (long)batch * _tower[i]) : Scratch(ref _t2, (long)batch * _tower[i]);
            Linear(input, batch, inWidth, _towerW[i], _towerB[i], output);
            Relu(output);
            input = output;
            inWidth = _tower[i];
        }
        input[..(batch * _dh)].CopyTo(states);
        for (int b = 0; b < batch; b++) logits[b] = TensorPrimitives.Dot(input.Slice(b * _dh, _dh), _outW) + _outB;
    }

    /// <summary>Frees the uploaded weights and the scratch buffers (not the backend, which is the caller's).</summary>
    public void Dispose()
    {
        _x?.Dispose();
        _y?.Dispose();
        foreach (var buffer in _owned) buffer.Dispose();
        _owned.Clear();
    }
}
