using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// A <see cref="RellaxAdapter"/> on a backend: A and B of every target, the generators, the projector, and the
/// per-batch interaction matrices G [B, r, r] (generated from the batch's h_u, or identity for plain LoRA). For training
/// (<see cref="EnableGradients"/>) it also holds one gradient tensor per trained tensor, written by
/// <see cref="BatchForward.Backward"/>, and every tensor can be refreshed from host values between steps.
/// </summary>
internal sealed class DeviceAdapter : IDisposable
{
    private readonly List<DeviceBuffer> _owned = [];
    private readonly Dictionary<(int Layer, LlamaModule Module), Target> _targets = [];
    private readonly int _rank;
    private DeviceBuffer? _identity;          // [capacity, r, r] identity matrices (plain LoRA)
    private int _capacity;

    public DeviceAdapter(RellaxAdapter adapter, ComputeBackend backend)
    {
        Backend = backend;
        _rank = adapter.Config.Rank;
        InstanceDim = adapter.Config.InstanceDim ?? 0;
        try
        {
            foreach (var t in adapter.Targets)
            {
                Generator? g = t.Generator is { } gw
                    ? new Generator(Up(gw.LnWeight, gw.LnWeight.Length), Up(gw.LnBias, gw.LnBias.Length),
                        Up(gw.W1, 2 * _rank * _rank, gw.LnWeight.Length), Up(gw.B1, 2 * _rank * _rank),
                        Up(gw.W2, _rank * _rank, 2 * _rank * _rank), Up(gw.B2, _rank * _rank))
                    : null;
                _targets[(t.Layer, t.Module)] = new Target(this, t.Layer, t.Module, Up(t.A, _rank, t.InFeatures), Up(t.B, t.OutFeatures, _rank), adapter.Config.Scale, g);
            }
            if (adapter.Projector is { } p)
            {
                int h = p.B1.Length, e = p.W1.Length / h;
                Projector = new ProjectorTensors(Up(p.W1, h, e), Up(p.B1, h), Up(p.W2, h, h), Up(p.B2, h));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public ComputeBackend Backend { get; }

    /// <summary>LoRA rank r.</summary>
    public int Rank => _rank;

    /// <summary>d_h of the generators' input (0 without generators).</summary>
    public int InstanceDim { get; }

    public ProjectorTensors? Projector { get; }

    /// <summary>Every target, ordered by layer, then module.</summary>
    public IEnumerable<Target> Targets => _targets.Values.OrderBy(t => t.Layer).ThenBy(t => t.Module);

    /// <summary>The parts whose gradients <see cref="BatchForward.Backward"/> writes (none unless enabled).</summary>
    public Training.AdapterParts Trained { get; private set; }

    public Target? Find(int layer, LlamaModule module) => _targets.GetValueOrDefault((layer, module));

    private Tensor Up(float[] data, params ReadOnlySpan<int> shape)
    {
        var buffer = Backend.Upload<float>(data);
        _owned.Add(buffer);
        return buffer.AsTensor(shape);
    }

    private Tensor Zeros(params ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        var buffer = Backend.Allocate(DType.F32, n);
        _owned.Add(buffer);
        return buffer.AsTensor(shape);
    }

    /// <summary>Allocates the gradient tensors of <paramref name="parts"/> (the generators' dG per batch grows with it).</summary>
    public void EnableGradients(Training.AdapterParts parts)
    {
        Trained = parts;
        foreach (var t in _targets.Values)
        {
            if (parts.HasFlag(Training.AdapterParts.Lora))
            {
                t.DA = Zeros(t.A.Dim(0), t.A.Dim(1));
                t.DB = Zeros(t.B.Dim(0), t.B.Dim(1));
            }
            if (parts.HasFlag(Training.AdapterParts.Gate) && t.Generator is { } g)
                t.GeneratorGrad = new Generator(Zeros(g.LnWeight.Dim(0)), Zeros(g.LnBias.Dim(0)), Zeros(g.W1.Dim(0), g.W1.Dim(1)),
                    Zeros(g.B1.Dim(0)), Zeros(g.W2.Dim(0), g.W2.Dim(1)), Zeros(g.B2.Dim(0)));
        }
        if (parts.HasFlag(Training.AdapterParts.Projector) && Projector is { } p)
            ProjectorGrad = new ProjectorTensors(Zeros(p.W1.Dim(0), p.W1.Dim(1)), Zeros(p.B1.Dim(0)), Zeros(p.W2.Dim(0), p.W2.Dim(1)), Zeros(p.B2.Dim(0)));
        if (_capacity > 0) foreach (var t in _targets.Values) t.Allocate(_capacity);
    }

    /// <summary>The projector's gradients (when the projector is trained).</summary>
    public ProjectorTensors? ProjectorGrad { get; private set; }

    /// <summary>Makes every target's G [B, r, r] for this batch: the generator applied to the batch's h_u, or identity.</summary>
    public void PrepareInteractions(in ForwardBatch batch)
    {
        int b = batch.Sequences, r2 = _rank * _rank;
        if (b > _capacity)
        {
            _capacity = Math.Max(b, 2 * _capacity);
            foreach (var t in _targets.Values) t.Allocate(_capacity);
            if (_identity is not null) { _owned.Remove(_identity); _identity.Dispose(); }
            _identity = Backend.Upload<float>(CfloraInteractions.Identity(_capacity, _rank));
            _owned.Add(_identity);
        }
        if (_targets.Values.Any(t => t.Generator is not null))
        {
            using var h = Backend.Upload<float>(batch.Instances);
            var hT = h.AsTensor(b, InstanceDim);
            foreach (var t in _targets.Values)
            {
                var g = t.Generator!;
                Backend.Cflora.Generate(hT, g.LnWeight, g.LnBias, GeneratorEps, g.W1, g.B1, g.W2, g.B2, t.InteractionsFor(b));
            }
        }
    }

    /// <summary>LayerNorm eps of the CFLoRA generators (PyTorch's default).</summary>
    public const float GeneratorEps = 1e-5f;

    public void Dispose()
    {
        foreach (var t in _targets.Values) { t.G?.Dispose(); t.DGBuffer?.Dispose(); }
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }

    /// <summary>One adapted module on the device.</summary>
    internal sealed class Target(DeviceAdapter owner, int layer, LlamaModule module, Tensor a, Tensor b, float scale, Generator? generator)
    {
        public int Layer { get; } = layer;
        public LlamaModule Module { get; } = module;
        public Tensor A { get; } = a;
        public Tensor B { get; } = b;
        public float Scale { get; } = scale;
        public Generator? Generator { get; } = generator;

        /// <summary>Gradients of A and B (when LoRA is trained).</summary>
        public Tensor? DA { get; set; }
        public Tensor? DB { get; set; }

        /// <summary>Gradients of the generator's tensors (when the gate is trained).</summary>
        public Generator? GeneratorGrad { get; set; }

        /// <summary>This target's generated G [capacity, r, r] (CFLoRA only).</summary>
        public DeviceBuffer? G { get; private set; }

        /// <summary>dG [capacity, r, r] (CFLoRA with the gate trained).</summary>
        public DeviceBuffer? DGBuffer { get; private set; }

        public void Allocate(int capacity)
        {
            if (Generator is null) return;
            G?.Dispose();
            G = owner.Backend.Allocate(DType.F32, (long)capacity * owner._rank * owner._rank);
            DGBuffer?.Dispose();
            DGBuffer = GeneratorGrad is null ? null : owner.Backend.Allocate(DType.F32, (long)capacity * owner._rank * owner._rank);
        }

        /// <summary>G for the first <paramref name="samples"/> samples of the current batch.</summary>
        public Tensor InteractionsFor(int samples)
        {
            int r = owner._rank;
            var source = G ?? owner._identity!;
            return new Tensor(source, 0, samples, r, r);
        }

        /// <summary>G for the backward: null for plain LoRA (the identity needs no r × r work).</summary>
        public Tensor? BackwardInteractions(int samples) => Generator is null ? null : InteractionsFor(samples);

        /// <summary>dG for the first <paramref name="samples"/> samples, or null when the gate is not trained.</summary>
        public Tensor? InteractionGradient(int samples)
        {
            int r = owner._rank;
            return DGBuffer is null ? null : new Tensor(DGBuffer, 0, samples, r, r);
        }
    }

    internal sealed record Generator(Tensor LnWeight, Tensor LnBias, Tensor W1, Tensor B1, Tensor W2, Tensor B2);

    internal sealed record ProjectorTensors(Tensor W1, Tensor B1, Tensor W2, Tensor B2);
}
