using Rellax.Runtime;
using System.Numerics.Tensors;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime.Training;
using Tensor = Rellax.Kernels.Tensor;

namespace Rellax.Rec;

/// <summary>
/// Trains a <see cref="DinModel"/> (SPEC §5, ReLU activations) with the mean sigmoid-BCE of its click logit: the batched
/// forward with saved activations and its backward on the caller's <see cref="CpuBackend"/> (the GEMMs and backward ops of
/// <see cref="BackwardOps"/>, parallel inside each op over the backend's <see cref="CpuBackend.Threads"/>), plugged into
/// the shared <see cref="TrainingLoop"/>. CPU only: the trainer wraps its host arrays as tensors
/// (<see cref="CpuBackend.Wrap(float[])"/>). The backend stays the caller's (never disposed).
/// </summary>
/// <remarks>
/// <para><b>Parameters</b> are the tensors of <see cref="DinModel.TensorShapes"/> (the checkpoint's names), held as
/// <see cref="Parameter"/>s; <see cref="Model"/> is a <see cref="DinModel"/> over the live arrays, so validation runs the
/// exact forward that <c>eval --din</c> runs on the saved checkpoint, and <see cref="DinModel.Save"/> writes it.</para>
/// <para><b>Initialisation</b> (PyTorch's defaults, which the reference's <c>ctr_base</c> DIN keeps: it never overrides
/// them): every Linear weight and bias uniform in ±1/sqrt(in) (Kaiming-uniform with a = sqrt(5)); the embedding table
/// N(0, σ²) with σ = 1 by default (<c>nn.Embedding</c>'s default; <see cref="DinTrainingOptions.EmbeddingInitStd"/>). Drawn from one seeded <see cref="Random"/> in mapping-table order.</para>
/// <para><b>Forward</b> per batch of B samples with P history positions: the factored first attention layer of
/// <c>DinRunner</c> (t part per sample, [h; t*h] part per position), ReLU everywhere, the unnormalised weighted sum, the
/// tower and the logit. <b>Backward</b>: the chain in reverse through <see cref="BackwardOps"/>; the factored layer's
/// gradients (dW_t' [A0, E], dW_hp [A0, 2E]) map back to the stored weight's four column blocks as dW_t = dW_t',
/// dW_h = dW_h', dW_d = dW_t' − dW_h', dW_p = dW_p'. The table's gradient is a scatter-add over the rows the batch used.</para>
/// </remarks>
internal sealed class DinTrainer : ITrainable, IDisposable
{
    private readonly CpuBackend _backend;

    /// <summary>The backend argument as a <see cref="CpuBackend"/>, or an error naming the argument.</summary>
    /// <exception cref="ArgumentException"><paramref name="backend"/> is another backend.</exception>
    internal static CpuBackend RequireCpu(ComputeBackend backend, string paramName)
    {
        ArgumentNullException.ThrowIfNull(backend, paramName);
        return backend as CpuBackend ?? throw new ArgumentException(
            $"{paramName}: DIN training runs on the CPU backend only (it wraps its host arrays as tensors), got the '{backend.Name}' backend; " +
            "pass a CpuBackend (Backends.Create(\"cpu\"))", paramName);
    }
    private readonly List<DeviceBuffer> _owned = [];
    private readonly Dictionary<string, Parameter> _byName = new(StringComparer.Ordinal);
    private readonly Dictionary<object, DeviceBuffer> _buffers = new(ReferenceEqualityComparer.Instance);
    private readonly DinEncodedSamples _train;
    private readonly DinEncodedSamples? _valid;
    private readonly int _e, _fields, _itemField, _towerIn, _maxBatch, _maxPositions;
    private readonly int[] _att, _tower;
    private readonly float _dropout;
    private readonly Random _dropRandom;
    private readonly float[][] _dropMask;

    // Scratch (pinned arrays wrapped as tensors), sized for the largest batch.
    private readonly float[] _histIn, _hist, _targets, _towerInput, _c, _z, _scores, _logits, _labels, _dlogits;
    private readonly float[][] _act, _dact, _tx, _dtx;
    private readonly float[] _dTowerInput, _dFields, _du, _dscores, _dz, _dc, _dt, _dh, _dHistIn;
    private readonly float[] _wt, _whp, _dwt, _dwhp;
    private readonly int[] _fieldRows, _starts, _targetRows, _histRows;

    /// <summary>Prepares training on <paramref name="train"/> with validation on <paramref name="valid"/>.</summary>
    /// <param name="backend">A <see cref="CpuBackend"/> (its threads run the ops); the caller's, not disposed.</param>
    /// <param name="config">The model's shape (its layout must be the samples' encoding).</param>
    /// <param name="train">Encoded training samples (at least one).</param>
    /// <param name="valid">Encoded validation samples, or null.</param>
    /// <param name="maxBatch">The largest batch <see cref="ComputeGradients"/> gets.</param>
    /// <param name="seed">Seed of the initialisation.</param>
    /// <param name="embeddingInitStd">Standard deviation of the table's normal initialisation (1: PyTorch's and the
    /// reference's).</param>
    /// <param name="dropout">Dropout probability after each tower layer during training (0: none; evaluation never drops).</param>
    /// <exception cref="ArgumentException"><paramref name="backend"/> is not a <see cref="CpuBackend"/>.</exception>
    public DinTrainer(ComputeBackend backend, DinConfig config, DinEncodedSamples train, DinEncodedSamples? valid, int maxBatch, int seed,
        double embeddingInitStd = 1, float dropout = 0)
    {
        _backend = RequireCpu(backend, nameof(backend));
        if (!(dropout >= 0 && dropout < 1)) throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "dropout must be in [0, 1)");
        _dropout = dropout;
        _dropRandom = new Random(seed + 1);
        config.Validate();
        Config = config;
        _train = train;
        _valid = valid;
        _e = config.EmbedDim;
        _fields = config.Fields.Count;
        _itemField = config.ItemFieldIndex;
        _towerIn = config.TowerInputDim;
        _att = [.. config.AttentionSizes];
        _tower = [.. config.TowerSizes];
        _maxBatch = Math.Max(1, maxBatch);
        int longest = 0;
        for (int s = 0; s < train.Count; s++) longest = Math.Max(longest, train.Starts[s + 1] - train.Starts[s]);
        _maxPositions = Math.Max(1, checked(_maxBatch * longest));

        var random = new Random(seed);
        var parameters = new List<Parameter>();
        foreach (var (name, shape) in DinModel.TensorShapes(config))
        {
            var values = new float[shape.Aggregate(1, (a, b) => checked(a * b))];
            if (name == DinModel.TableName)
                for (int i = 0; i < values.Length; i++) values[i] = (float)(Normal(random) * embeddingInitStd);
            else
            {
                // Linear weight [out, in] or its bias [out]: both uniform in ±1/sqrt(in), in = the weight's second axis.
                int fanIn = shape.Length == 2 ? shape[1] : LinearFanIn(config, name);
                double bound = 1 / Math.Sqrt(fanIn);
                for (int i = 0; i < values.Length; i++) values[i] = (float)((2 * random.NextDouble() - 1) * bound);
            }
            var p = new Parameter(name, shape, values);
            parameters.Add(p);
            _byName[name] = p;
        }
        Parameters = parameters;
        Model = DinModel.FromWeights(config, parameters.ToDictionary(p => p.Name, p => p.Value));

        int bm = _maxBatch, pm = _maxPositions, e = _e, a0 = _att[0];
        _histIn = Alloc((long)pm * 2 * e); _hist = Alloc((long)pm * e); _targets = Alloc((long)bm * e);
        _towerInput = Alloc((long)bm * _towerIn); _c = Alloc((long)bm * a0); _z = Alloc((long)pm * 2 * e);
        _scores = Alloc(pm); _logits = Alloc(bm); _labels = Alloc(bm); _dlogits = Alloc(bm);
        _act = [.. _att.Select(a => Alloc((long)pm * a))];
        _dact = [.. _att.Select(a => Alloc((long)pm * a))];
        _tx = [.. _tower.Select(t => Alloc((long)bm * t))];
        _dtx = [.. _tower.Select(t => Alloc((long)bm * t))];
        _dropMask = [.. _tower.Select(t => dropout > 0 ? new float[(long)bm * t] : [])];
        _dTowerInput = Alloc((long)bm * _towerIn); _dFields = Alloc((long)bm * _fields * e); _du = Alloc((long)bm * e);
        _dscores = Alloc(pm); _dz = Alloc((long)pm * 2 * e); _dc = Alloc((long)bm * a0); _dt = Alloc((long)bm * e);
        _dh = Alloc((long)pm * e); _dHistIn = Alloc((long)pm * 2 * e);
        _wt = Alloc((long)a0 * e); _whp = Alloc((long)a0 * 2 * e); _dwt = Alloc((long)a0 * e); _dwhp = Alloc((long)a0 * 2 * e);
        _fieldRows = AllocInt((long)bm * _fields); _starts = AllocInt(bm + 1); _targetRows = AllocInt(bm); _histRows = AllocInt((long)pm * 2);
    }

    /// <summary>The model's shape.</summary>
    public DinConfig Config { get; }

    /// <summary>A <see cref="DinModel"/> over the live parameters (what validation runs and what a checkpoint saves).</summary>
    public DinModel Model { get; }

    /// <inheritdoc/>
    public IReadOnlyList<Parameter> Parameters { get; }

    /// <inheritdoc/>
    public int TrainingCount => _train.Count;

    /// <summary>The dropout masks of the last <see cref="ComputeGradients"/> per tower layer ([B, T_i] values 0 or
    /// 1/(1 − p); empty without dropout), for tests.</summary>
    internal IReadOnlyList<float[]> DropoutMasks => _dropMask;

    /// <summary>The parameter named <paramref name="name"/> (a tensor name of <see cref="DinModel.TensorShapes"/>).</summary>
    public Parameter Parameter(string name) => _byName[name];

    private static double Normal(Random random)
    {
        double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>The input width of the Linear layer whose bias is <paramref name="biasName"/>.</summary>
    private static int LinearFanIn(DinConfig config, string biasName) =>
        DinModel.TensorShapes(config).First(t => t.Name == biasName[..^"bias".Length] + "weight").Shape[1];

    private float[] Alloc(long length)
    {
        var a = GC.AllocateArray<float>(checked((int)Math.Max(1, length)), pinned: true);
        _ = Buffer(a);
        return a;
    }

    private int[] AllocInt(long length)
    {
        var a = GC.AllocateArray<int>(checked((int)Math.Max(1, length)), pinned: true);
        var buffer = _backend.Wrap(a);
        _owned.Add(buffer);
        _buffers[a] = buffer;
        return a;
    }

    /// <summary>The first rows × cols elements of a scratch or parameter array as a [rows, cols] tensor.</summary>
    private Tensor T(float[] array, int rows, int cols) => new(Buffer(array), 0, rows, cols);

    private Tensor V(float[] array, int length) => new(Buffer(array), 0, length);

    private Tensor I(int[] array, int length) => new(_buffers[array], 0, length);

    /// <summary>The buffer over <paramref name="array"/> (a scratch array, or a parameter's value or gradient, wrapped on
    /// first use).</summary>
    private DeviceBuffer Buffer(float[] array)
    {
        if (!_buffers.TryGetValue(array, out var buffer))
        {
            buffer = _backend.Wrap(array);
            _owned.Add(buffer);
            _buffers[array] = buffer;
        }
        return buffer;
    }

    /// <inheritdoc/>
    public double ComputeGradients(ReadOnlySpan<int> batch)
    {
        int count = batch.Length;
        if (count > _maxBatch) throw new ArgumentException($"batch of {count} is larger than the {_maxBatch} the trainer was sized for", nameof(batch));
        // Gather the batch's inputs.
        int positions = 0;
        _starts[0] = 0;
        for (int b = 0; b < count; b++)
        {
            int s = batch[b];
            int p0 = _train.Starts[s], len = _train.Starts[s + 1] - p0;
            _train.FieldRows.AsSpan(s * _fields, _fields).CopyTo(_fieldRows.AsSpan(b * _fields, _fields));
            for (int j = 0; j < len; j++)
            {
                _histRows[2 * (positions + j)] = _train.ItemRows[p0 + j];
                _histRows[2 * (positions + j) + 1] = _train.RatingRows[p0 + j];
            }
            positions += len;
            _starts[b + 1] = positions;
            _labels[b] = _train.Labels[s];
        }
        double loss = Forward(count, positions);
        Backward(count, positions);
        return loss;
    }

    private static void Relu(Span<float> x) => TensorPrimitives.Max(x, 0f, x);

    /// <summary>Inverted dropout: draws mask = 0 with probability p, else 1/(1 − p), and multiplies x by it.</summary>
    private void ApplyDropout(Span<float> x, Span<float> mask)
    {
        float keep = 1 / (1 - _dropout);
        for (int i = 0; i < mask.Length; i++) mask[i] = _dropRandom.NextSingle() < _dropout ? 0f : keep;
        TensorPrimitives.Multiply(x, mask, x);
    }

    /// <summary>The forward over the gathered batch, keeping every activation the backward needs; returns the mean loss
    /// and leaves dlogits = (σ(z) − y)/B.</summary>
    private double Forward(int batch, int positions)
    {
        var prim = _backend.Primitives;
        int e = _e, a0 = _att[0];
        ReadOnlySpan<float> table = Parameter(DinModel.TableName).Value;

        // History: h = ReLU(W_m [T[item]; T[rating]] + b_m)  [P, E]
        for (int j = 0; j < 2 * positions; j++) table.Slice(_histRows[j] * e, e).CopyTo(_histIn.AsSpan(j * e, e));
        prim.Linear(T(_histIn, positions, 2 * e), W(DinModel.MapWeight, e, 2 * e), Bias(DinModel.MapBias, e), T(_hist, positions, e));
        Relu(_hist.AsSpan(0, positions * e));

        // Fields into the tower input, the target item into t.
        for (int b = 0; b < batch; b++)
        {
            for (int f = 0; f < _fields; f++)
                table.Slice(_fieldRows[b * _fields + f] * e, e).CopyTo(_towerInput.AsSpan(b * _towerIn + f * e, e));
            _targetRows[b] = _fieldRows[b * _fields + _itemField];
            table.Slice(_targetRows[b] * e, e).CopyTo(_targets.AsSpan(b * e, e));
        }

        // Attention layer 0, factored: c = W_t' t + b0 [B, A0]; a = W_hp [h; t*h] + c_b [P, A0]; ReLU.
        DinRunner.SplitFirstAttentionLayer(Parameter(DinModel.AttentionWeight(0)).Value, a0, e, _wt, _whp);
        prim.Linear(T(_targets, batch, e), T(_wt, a0, e), Bias(DinModel.AttentionBias(0), a0), T(_c, batch, a0));
        for (int b = 0; b < batch; b++)
        {
            var t = _targets.AsSpan(b * e, e);
            for (int j = _starts[b]; j < _starts[b + 1]; j++)
            {
                var h = _hist.AsSpan(j * e, e);
                h.CopyTo(_z.AsSpan(j * 2 * e, e));
                TensorPrimitives.Multiply(t, h, _z.AsSpan(j * 2 * e + e, e));
            }
        }
        prim.MatMul(T(_z, positions, 2 * e), T(_whp, a0, 2 * e), T(_act[0], positions, a0));
        for (int b = 0; b < batch; b++)
        {
            var cb = _c.AsSpan(b * a0, a0);
            for (int j = _starts[b]; j < _starts[b + 1]; j++)
            {
                var row = _act[0].AsSpan(j * a0, a0);
                TensorPrimitives.Add(row, cb, row);
            }
        }
        Relu(_act[0].AsSpan(0, positions * a0));
        for (int i = 1; i < _att.Length; i++)
        {
            prim.Linear(T(_act[i - 1], positions, _att[i - 1]), W(DinModel.AttentionWeight(i), _att[i], _att[i - 1]),
                Bias(DinModel.AttentionBias(i), _att[i]), T(_act[i], positions, _att[i]));
            Relu(_act[i].AsSpan(0, positions * _att[i]));
        }

        // Scores s_j = w_s · a_j + b_s (no softmax) and u_b = Σ_j s_j h_j into the tower input's last E columns.
        int al = _att[^1];
        ReadOnlySpan<float> ws = Parameter(DinModel.ScoreWeight).Value;
        float bs = Parameter(DinModel.ScoreBias).Value[0];
        for (int b = 0; b < batch; b++)
        {
            var u = _towerInput.AsSpan(b * _towerIn + _fields * e, e);
            u.Clear();
            for (int j = _starts[b]; j < _starts[b + 1]; j++)
            {
                _scores[j] = TensorPrimitives.Dot(_act[^1].AsSpan(j * al, al), ws) + bs;
                TensorPrimitives.MultiplyAdd(_hist.AsSpan(j * e, e), _scores[j], u, u);
            }
        }

        // Tower (ReLU after every layer) and the logit.
        var input = T(_towerInput, batch, _towerIn);
        for (int i = 0; i < _tower.Length; i++)
        {
            int inWidth = i == 0 ? _towerIn : _tower[i - 1];
            prim.Linear(input, W(DinModel.TowerWeight(i), _tower[i], inWidth), Bias(DinModel.TowerBias(i), _tower[i]), T(_tx[i], batch, _tower[i]));
            Relu(_tx[i].AsSpan(0, batch * _tower[i]));
            if (_dropout > 0) ApplyDropout(_tx[i].AsSpan(0, batch * _tower[i]), _dropMask[i].AsSpan(0, batch * _tower[i]));
            input = T(_tx[i], batch, _tower[i]);
        }
        int dh = _tower[^1];
        ReadOnlySpan<float> wo = Parameter(DinModel.OutWeight).Value;
        float bo = Parameter(DinModel.OutBias).Value[0];
        for (int b = 0; b < batch; b++) _logits[b] = TensorPrimitives.Dot(_tx[^1].AsSpan(b * dh, dh), wo) + bo;
        return _backend.Backward.SigmoidBce(V(_logits, batch), V(_labels, batch), 1f / batch, V(_dlogits, batch)) / batch;
    }

    private Tensor W(string name, int rows, int cols) => T(Parameter(name).Value, rows, cols);

    private Tensor Bias(string name, int length) => V(Parameter(name).Value, length);

    private Tensor GradW(string name, int rows, int cols) => T(Parameter(name).Grad, rows, cols);

    private Tensor GradB(string name, int length) => V(Parameter(name).Grad, length);

    /// <summary>The backward of <see cref="Forward"/>: overwrites every parameter's gradient.</summary>
    private void Backward(int batch, int positions)
    {
        var bw = _backend.Backward;
        int e = _e, a0 = _att[0], dh = _tower[^1];

        // Logit layer: dW_o = Σ dz x_L, db_o = Σ dz, dx_L = dz w_o.
        bw.LinearBackward(T(_tx[^1], batch, dh), W(DinModel.OutWeight, 1, dh), T(_dlogits, batch, 1),
            T(_dtx[^1], batch, dh), GradW(DinModel.OutWeight, 1, dh), GradB(DinModel.OutBias, 1));

        // Tower, last layer first.
        for (int i = _tower.Length - 1; i >= 0; i--)
        {
            int inWidth = i == 0 ? _towerIn : _tower[i - 1];
            var dy = T(_dtx[i], batch, _tower[i]);
            // Dropout's backward is the same mask (dropped units are 0 in _tx too, so the ReLU mask agrees).
            if (_dropout > 0) TensorPrimitives.Multiply(_dtx[i].AsSpan(0, batch * _tower[i]), _dropMask[i].AsSpan(0, batch * _tower[i]), _dtx[i].AsSpan(0, batch * _tower[i]));
            bw.ReluBackward(T(_tx[i], batch, _tower[i]), dy, dy);
            var x = i == 0 ? T(_towerInput, batch, _towerIn) : T(_tx[i - 1], batch, inWidth);
            var dx = i == 0 ? T(_dTowerInput, batch, _towerIn) : T(_dtx[i - 1], batch, inWidth);
            bw.LinearBackward(x, W(DinModel.TowerWeight(i), _tower[i], inWidth), dy, dx,
                GradW(DinModel.TowerWeight(i), _tower[i], inWidth), GradB(DinModel.TowerBias(i), _tower[i]));
        }

        // Split the tower input's gradient: the F field embeddings and u.
        for (int b = 0; b < batch; b++)
        {
            _dTowerInput.AsSpan(b * _towerIn, _fields * e).CopyTo(_dFields.AsSpan(b * _fields * e, _fields * e));
            _dTowerInput.AsSpan(b * _towerIn + _fields * e, e).CopyTo(_du.AsSpan(b * e, e));
        }

        // Weighted sum: ds_j = du_b · h_j; dh_j = s_j du_b (dh starts at zero).
        var dhist = T(_dh, positions, e);
        _dh.AsSpan(0, positions * e).Clear();
        var starts = I(_starts, batch + 1);
        bw.WeightedSumBackward(V(_scores, positions), T(_hist, positions, e), starts, T(_du, batch, e), V(_dscores, positions), dhist);

        // Score layer and the attention MLP's hidden layers, last first.
        int al = _att[^1];
        bw.LinearBackward(T(_act[^1], positions, al), W(DinModel.ScoreWeight, 1, al), T(_dscores, positions, 1),
            T(_dact[^1], positions, al), GradW(DinModel.ScoreWeight, 1, al), GradB(DinModel.ScoreBias, 1));
        for (int i = _att.Length - 1; i >= 1; i--)
        {
            var dy = T(_dact[i], positions, _att[i]);
            bw.ReluBackward(T(_act[i], positions, _att[i]), dy, dy);
            bw.LinearBackward(T(_act[i - 1], positions, _att[i - 1]), W(DinModel.AttentionWeight(i), _att[i], _att[i - 1]), dy,
                T(_dact[i - 1], positions, _att[i - 1]), GradW(DinModel.AttentionWeight(i), _att[i], _att[i - 1]), GradB(DinModel.AttentionBias(i), _att[i]));
        }

        // Attention layer 0 (factored): dW_hp = da0ᵀ z, dz = da0 W_hp; dc_b = Σ_j da0_j; dW_t' = dcᵀ t, db0 = Σ dc, dt = dc W_t'.
        var da0 = T(_dact[0], positions, a0);
        bw.ReluBackward(T(_act[0], positions, a0), da0, da0);
        bw.LinearBackward(T(_z, positions, 2 * e), T(_whp, a0, 2 * e), da0, T(_dz, positions, 2 * e), T(_dwhp, a0, 2 * e), null);
        for (int b = 0; b < batch; b++)
        {
            var dcb = _dc.AsSpan(b * a0, a0);
            dcb.Clear();
            for (int j = _starts[b]; j < _starts[b + 1]; j++) TensorPrimitives.Add(dcb, _dact[0].AsSpan(j * a0, a0), dcb);
        }
        bw.LinearBackward(T(_targets, batch, e), T(_wt, a0, e), T(_dc, batch, a0), T(_dt, batch, e), T(_dwt, a0, e),
            GradB(DinModel.AttentionBias(0), a0));
        MergeFirstAttentionGradient(Parameter(DinModel.AttentionWeight(0)).Grad, a0, e);
        bw.TargetInteractionBackward(T(_targets, batch, e), T(_hist, positions, e), starts, T(_dz, positions, 2 * e), T(_dt, batch, e), dhist);

        // History mapping: through the ReLU, then the Linear over [T[item]; T[rating]].
        bw.ReluBackward(T(_hist, positions, e), dhist, dhist);
        bw.LinearBackward(T(_histIn, positions, 2 * e), W(DinModel.MapWeight, e, 2 * e), dhist, T(_dHistIn, positions, 2 * e),
            GradW(DinModel.MapWeight, e, 2 * e), GradB(DinModel.MapBias, e));

        // The table: scatter-add of every looked-up row's gradient (fields, target, history items and ratings).
        var table = Parameter(DinModel.TableName);
        Array.Clear(table.Grad);
        var dTable = T(table.Grad, Config.NumFeatures, e);
        bw.EmbeddingBackward(I(_fieldRows, batch * _fields), T(_dFields, batch * _fields, e), dTable);
        bw.EmbeddingBackward(I(_targetRows, batch), T(_dt, batch, e), dTable);
        bw.EmbeddingBackward(I(_histRows, 2 * positions), T(_dHistIn, 2 * positions, e), dTable);
    }

    /// <summary>dW0 [A0, 4E] from the factored layer's dW_t' [A0, E] and dW_hp = [dW_h' | dW_p'] [A0, 2E].</summary>
    private void MergeFirstAttentionGradient(Span<float> dw0, int a0, int e)
    {
        for (int o = 0; o < a0; o++)
        {
            var row = dw0.Slice(o * 4 * e, 4 * e);
            var dwt = _dwt.AsSpan(o * e, e);
            var dwh = _dwhp.AsSpan(o * 2 * e, e);
            dwt.CopyTo(row[..e]);
            dwh.CopyTo(row[e..(2 * e)]);
            TensorPrimitives.Subtract(dwt, dwh, row[(2 * e)..(3 * e)]);
            _dwhp.AsSpan(o * 2 * e + e, e).CopyTo(row[(3 * e)..]);
        }
    }

    /// <summary>Click probabilities of <paramref name="samples"/> with the current parameters (<see cref="DinModel.Forward"/>,
    /// the forward <c>eval --din</c> runs on a saved checkpoint).</summary>
    public double[] Predict(DinEncodedSamples samples)
    {
        var logits = new float[samples.Count];
        var states = new float[(long)samples.Count * Config.StateDim];
        Model.Forward(_backend, samples.FieldRows, samples.Starts, samples.ItemRows, samples.RatingRows, states, logits);
        var p = new double[samples.Count];
        for (int i = 0; i < p.Length; i++) p[i] = DinTraining.Sigmoid(logits[i]);
        return p;
    }

    /// <summary>The metrics of <paramref name="samples"/> with the current parameters.</summary>
    public CtrMetrics Evaluate(DinEncodedSamples samples)
    {
        var p = Predict(samples);
        var labels = samples.Labels.Select(l => l > 0).ToArray();
        return CtrMetrics.Compute(p, labels);
    }

    /// <inheritdoc/>
    public ValidationResult? Validate(CancellationToken cancellationToken)
    {
        if (_valid is null || _valid.Count == 0) return null;
        cancellationToken.ThrowIfCancellationRequested();
        var m = Evaluate(_valid);
        return new ValidationResult(m.Auc, m.LogLoss, m.Accuracy);
    }

    /// <summary>Frees the wrapped buffers (not the backend, which is the caller's).</summary>
    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }
}
