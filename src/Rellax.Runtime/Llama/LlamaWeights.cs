using Rellax.Kernels;
using Rellax.Kernels.Cpu;

namespace Rellax.Runtime;

/// <summary>
/// One decoder layer's weights on a backend, HF layout ([out, in] for linear layers). Linear weights are held as
/// <see cref="ModelLoadOptions.Weights"/> says (by default the checkpoint's dtype: f32, f16 or bf16, widened on the fly;
/// or int8, <see cref="LinearWeight"/>); norms and biases are f32.
/// </summary>
internal sealed class LlamaLayerWeights
{
    public required DeviceBuffer InputNorm { get; init; }        // [H] f32
    public required LinearWeight Q { get; init; }                // [Hq·D, H]
    public required LinearWeight K { get; init; }                // [Hkv·D, H]
    public required LinearWeight V { get; init; }                // [Hkv·D, H]
    public DeviceBuffer? QBias { get; init; }                    // [Hq·D] f32, Qwen2 / Llama attention_bias
    public DeviceBuffer? KBias { get; init; }                    // [Hkv·D] f32
    public DeviceBuffer? VBias { get; init; }                    // [Hkv·D] f32
    public required LinearWeight O { get; init; }                // [H, Hq·D]
    public DeviceBuffer? OBias { get; init; }                    // [H] f32, Llama attention_bias only (Qwen2 has none)
    public required DeviceBuffer PostAttentionNorm { get; init; } // [H] f32
    public required LinearWeight Gate { get; init; }             // [I, H]
    public required LinearWeight Up { get; init; }               // [I, H]
    public required LinearWeight Down { get; init; }             // [H, I]
}

/// <summary>
/// All weights of a Llama-family decoder on one backend; owns (and disposes) every buffer, and the checkpoint when
/// buffers are views of its mapping.
/// </summary>
/// <remarks>
/// <para><b>Dtypes.</b> With <see cref="WeightFormat.Auto"/> the embedding, lm_head and every linear weight keep the
/// checkpoint's dtype (F32, F16 or BF16); <see cref="WeightFormat.F32"/>/<see cref="WeightFormat.BF16"/>/<see cref="WeightFormat.F16"/>
/// convert them at load; <see cref="WeightFormat.Int8"/> quantizes all of them (<see cref="Primitives.QuantizeInt8(Tensor)"/>) and
/// copies the norms, so the checkpoint is closed after loading. Norms and biases are f32 (widened at load when the
/// checkpoint stores them in half precision; they are vectors).</para>
/// <para><b>Zero copy on the CPU backend.</b> A tensor whose dtype is kept and whose bytes in the memory-mapped file
/// are aligned to its element size becomes a read-only view of the mapping (<see cref="CpuBackend.WrapReadOnly"/>):
/// opening a model copies no weights, pages are read from the file (or the page cache) on first use, and resident
/// memory stays near the weights' size. The checkpoint then stays open until <see cref="Dispose"/>. A misaligned
/// tensor is copied. GPU backends upload every tensor in its dtype (2 bytes per element for F16/BF16).
/// <see cref="BytesMapped"/>, <see cref="BytesCopied"/> and <see cref="BytesWidened"/> say which happened.</para>
/// </remarks>
internal sealed class LlamaWeights : IDisposable
{
    private readonly List<IDisposable> _owned = [];
    private IDisposable? _checkpoint;

    public required LinearWeight Embedding { get; init; }  // [V, H]
    public required DeviceBuffer FinalNorm { get; init; }  // [H] f32
    public required LinearWeight LmHead { get; init; }     // [V, H]; the embedding itself when tied
    public required LlamaLayerWeights[] Layers { get; init; }
    public DeviceBuffer RopeCos { get; init; } = null!;   // [P, D/2] f32
    public DeviceBuffer RopeSin { get; init; } = null!;   // [P, D/2] f32

    /// <summary>Checkpoint bytes used in place (views of the memory-mapped file; CPU backend only).</summary>
    public long BytesMapped { get; private init; }

    /// <summary>Checkpoint bytes copied into backend memory in their own dtype (every tensor on a GPU backend; misaligned ones on the CPU).</summary>
    public long BytesCopied { get; private init; }

    /// <summary>Checkpoint bytes of half-precision norms and biases widened to f32 (the f32 result is twice this).</summary>
    public long BytesWidened { get; private init; }

    /// <summary>The format the matrices were loaded in (<see cref="ModelLoadOptions.Weights"/>).</summary>
    public WeightFormat Format { get; private init; }

    /// <summary>LLM.int8() outlier threshold the int8 linear layers use.</summary>
    public float OutlierThreshold { get; private init; } = Primitives.DefaultOutlierThreshold;

    /// <summary>Bytes of every weight (matrices, norms, biases; RoPE tables excluded) as held on the backend, mapped or owned.</summary>
    public long WeightBytes { get; private init; }

    /// <summary>Time spent quantizing (int8) or converting (f32/bf16/f16 from another dtype) matrices at load.</summary>
    public TimeSpan ConversionTime { get; private init; }

    /// <summary>
    /// Reads every tensor the config names from the checkpoint onto <paramref name="backend"/> (see the remarks for
    /// dtypes and zero copy). Takes ownership of <paramref name="checkpoint"/>: it is disposed here when no buffer maps
    /// it (or on failure), otherwise by <see cref="Dispose"/>; the caller must not dispose it.
    /// </summary>
    /// <exception cref="InvalidDataException">A tensor is missing, has the wrong shape, or a dtype other than F32/F16/BF16;
    /// a bias is present that the config does not announce (attention_bias false); int8 was asked for and a matrix cannot
    /// be quantized (a non-finite value, or more input columns than exact i32 sums allow; the tensor is named).</exception>
    /// <exception cref="NotSupportedException">int8 on a backend without int8 kernels.</exception>
    public static LlamaWeights Load(SafeTensorsCheckpoint checkpoint, LlamaConfig config, ComputeBackend backend, ModelLoadOptions? options = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new ModelLoadOptions();
        Primitives.CheckOutlierThreshold(options.OutlierThreshold);
        var owned = new List<IDisposable>();
        long mapped = 0, copied = 0, widened = 0, held = 0;
        var format = options.Weights;
        var conversion = new System.Diagnostics.Stopwatch();
        try
        {
            int h = config.HiddenSize, d = config.HeadDim, hq = config.NumAttentionHeads, hkv = config.NumKeyValueHeads;
            var cpu = backend as CpuBackend;

            void CheckShape(string name, int[] shape)
            {
                if (!checkpoint.Contains(name))
                    throw new InvalidDataException($"checkpoint has no tensor '{name}' (needed by {config.Architecture})");
                var info = checkpoint.Info(name);
                if (!info.Shape.SequenceEqual(shape))
                    throw new InvalidDataException($"tensor '{name}' has shape [{string.Join(", ", info.Shape)}], config.json implies [{string.Join(", ", shape)}]");
            }

            // A matrix as the options say: as stored (below), converted to another float dtype, or quantized to int8.
            LinearWeight Matrix(string name, int rows, int cols)
            {
                CheckShape(name, [rows, cols]);
                var stored = checkpoint.Info(name).DType;
                float? int8Threshold = format != WeightFormat.Int8 ? null : options.Int8Plan is { } plan ? plan(name) : options.OutlierThreshold;
                if (int8Threshold is float threshold)
                {
                    Primitives.CheckOutlierThreshold(threshold);
                    var dense = Stored(name, rows, cols, track: false);
                    conversion.Start();
                    try
                    {
                        var q = backend.Primitives.QuantizeInt8(dense.AsTensor(rows, cols), options.Int8GroupSize);
                        owned.Add(q);
                        held += q.SizeInBytes;
                        return LinearWeight.Of(q, threshold);
                    }
                    catch (ArgumentException e)
                    {
                        throw new InvalidDataException($"tensor '{name}' cannot be quantized to int8: {e.Message.Split(" (Parameter")[0]}", e);
                    }
                    finally
                    {
                        conversion.Stop();
                        dense.Dispose();
                        // Drop the F32 pages just read from the resident set: the load peaks near the int8 model plus one
                        // tensor instead of the whole mapped file (they stay in the page cache).
                        checkpoint.FileOf(name).ReleasePages(name);
                    }
                }
                DType? target = format switch { WeightFormat.F32 => DType.F32, WeightFormat.BF16 => DType.BF16, WeightFormat.F16 => DType.F16, _ => null };
                if (target is { } t && t != StoredType(name, stored))
                {
                    conversion.Start();
                    var values = checkpoint.ReadFloat32(name);
                    var buffer = t switch
                    {
                        DType.F32 => backend.Upload<float>(values),
                        DType.F16 => backend.Upload<Half>(values.Select(v => (Half)v).ToArray()),
                        _ => backend.Upload<BFloat16>(values.Select(v => (BFloat16)v).ToArray()),
                    };
                    conversion.Stop();
                    owned.Add(buffer);
                    held += buffer.SizeInBytes;
                    return LinearWeight.Of(buffer, rows, cols);
                }
                return LinearWeight.Of(Stored(name, rows, cols, track: true), rows, cols);
            }

            static DType StoredType(string name, SafeTensorDType stored) => stored switch
            {
                SafeTensorDType.F32 => DType.F32,
                SafeTensorDType.F16 => DType.F16,
                SafeTensorDType.BF16 => DType.BF16,
                _ => throw new InvalidDataException($"tensor '{name}' has dtype {stored.ToFormatString()}; weights must be F32, F16 or BF16"),
            };

            // A tensor in the checkpoint's dtype: a view of the mapping on the CPU when aligned, else a byte copy. Untracked
            // ones are temporaries (the source of a quantization) that the caller disposes.
            unsafe DeviceBuffer Stored(string name, int rows, int cols, bool track)
            {
                int[] shape = cols < 0 ? [rows] : [rows, cols];
                CheckShape(name, shape);
                var info = checkpoint.Info(name);
                var dtype = StoredType(name, info.DType);
                long count = info.ByteLength / dtype.SizeInBytes();
                byte* data = checkpoint.FileOf(name).DataPointer(name);
                if (cpu?.WrapReadOnly(dtype, count, (nint)data, checkpoint) is { } view)
                {
                    if (!track) return view;
                    owned.Add(view);
                    mapped += info.ByteLength;
                    held += info.ByteLength;
                    return view;
                }
                var buffer = backend.Allocate(dtype, count);
                try { CopyElements(buffer, data, count); }
                catch { buffer.Dispose(); throw; }
                if (!track) return buffer;
                owned.Add(buffer);
                copied += info.ByteLength;
                held += info.ByteLength;
                return buffer;
            }

            // A vector (norm weight, bias) in f32: mapped when stored F32 and aligned, else widened into a new buffer.
            // With int8 matrices nothing stays mapped: vectors are copied too, so the checkpoint closes after loading.
            DeviceBuffer Vector(string name, int length)
            {
                CheckShape(name, [length]);
                bool f32 = checkpoint.Info(name).DType == SafeTensorDType.F32;
                if (f32 && format != WeightFormat.Int8) return Stored(name, length, -1, track: true);
                var buffer = backend.Upload<float>(checkpoint.ReadFloat32(name));
                owned.Add(buffer);
                if (f32) copied += checkpoint.Info(name).ByteLength;
                else widened += checkpoint.Info(name).ByteLength;
                held += buffer.SizeInBytes;
                return buffer;
            }

            DeviceBuffer? Bias(string name, int length, bool required)
            {
                if (checkpoint.Contains(name))
                {
                    if (!config.AttentionBias)
                        throw new InvalidDataException($"checkpoint has '{name}' but config.json does not set attention_bias; refusing to ignore it");
                    return Vector(name, length);
                }
                if (required)
                    throw new InvalidDataException($"checkpoint has no tensor '{name}', which attention_bias (config.json) requires");
                return null;
            }

            int parts = config.NumHiddenLayers + 2;
            cancellationToken.ThrowIfCancellationRequested();
            var embedding = Matrix("model.embed_tokens.weight", config.VocabSize, h);
            progress?.Report(new WorkProgress("load", 1, parts));
            var layers = new LlamaLayerWeights[config.NumHiddenLayers];
            for (int i = 0; i < layers.Length; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                string p = $"model.layers.{i}.";
                bool bias = config.AttentionBias;
                layers[i] = new LlamaLayerWeights
                {
                    InputNorm = Vector(p + "input_layernorm.weight", h),
                    Q = Matrix(p + "self_attn.q_proj.weight", hq * d, h),
                    K = Matrix(p + "self_attn.k_proj.weight", hkv * d, h),
                    V = Matrix(p + "self_attn.v_proj.weight", hkv * d, h),
                    QBias = Bias(p + "self_attn.q_proj.bias", hq * d, bias),
                    KBias = Bias(p + "self_attn.k_proj.bias", hkv * d, bias),
                    VBias = Bias(p + "self_attn.v_proj.bias", hkv * d, bias),
                    O = Matrix(p + "self_attn.o_proj.weight", h, hq * d),
                    // Llama with attention_bias has an o_proj bias too; Qwen2 has none. Either way it is used when present.
                    OBias = Bias(p + "self_attn.o_proj.bias", h, required: false),
                    PostAttentionNorm = Vector(p + "post_attention_layernorm.weight", h),
                    Gate = Matrix(p + "mlp.gate_proj.weight", config.IntermediateSize, h),
                    Up = Matrix(p + "mlp.up_proj.weight", config.IntermediateSize, h),
                    Down = Matrix(p + "mlp.down_proj.weight", h, config.IntermediateSize),
                };
                progress?.Report(new WorkProgress("load", i + 2, parts));
            }
            cancellationToken.ThrowIfCancellationRequested();
            var finalNorm = Vector("model.norm.weight", h);
            // Tied checkpoints omit lm_head (save_pretrained drops the duplicate); an untied one must have it.
            var lmHead = config.TieWordEmbeddings && !checkpoint.Contains("lm_head.weight")
                ? embedding
                : Matrix("lm_head.weight", config.VocabSize, h);

            var invFreq = RopeTables.InverseFrequencies(d, config.RopeTheta);
            if (config.RopeScaling is { } rs)
                RopeTables.ApplyLlama3Scaling(invFreq, rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositionEmbeddings);
            var (cos, sin) = RopeTables.Build(invFreq, config.MaxPositionEmbeddings);
            var cosBuffer = backend.Upload<float>(cos); owned.Add(cosBuffer);
            var sinBuffer = backend.Upload<float>(sin); owned.Add(sinBuffer);

            var weights = new LlamaWeights
            {
                Embedding = embedding, FinalNorm = finalNorm, LmHead = lmHead, Layers = layers,
                RopeCos = cosBuffer, RopeSin = sinBuffer,
                BytesMapped = mapped, BytesCopied = copied, BytesWidened = widened,
                Format = format, OutlierThreshold = options.OutlierThreshold, WeightBytes = held, ConversionTime = conversion.Elapsed,
            };
            weights._owned.AddRange(owned);
            progress?.Report(new WorkProgress("load", parts, parts));
            if (mapped > 0) weights._checkpoint = checkpoint;
            else checkpoint.Dispose();
            return weights;
        }
        catch
        {
            foreach (var b in owned) b.Dispose();
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>Copies <paramref name="count"/> elements of the buffer's dtype from host memory, in chunks of at most 256 MiB.</summary>
    private static unsafe void CopyElements(DeviceBuffer buffer, byte* data, long count)
    {
        const long ChunkBytes = 1L << 28;
        int size = buffer.DType.SizeInBytes();
        long chunk = ChunkBytes / size;
        for (long start = 0; start < count; start += chunk)
        {
            int n = (int)Math.Min(chunk, count - start);
            byte* p = data + start * size;
            switch (buffer.DType)
            {
                case DType.F32: buffer.CopyFrom(new ReadOnlySpan<float>(p, n), start); break;
                case DType.F16: buffer.CopyFrom(new ReadOnlySpan<Half>(p, n), start); break;
                case DType.BF16: buffer.CopyFrom(new ReadOnlySpan<BFloat16>(p, n), start); break;
                default: throw new NotSupportedException($"weights of dtype {buffer.DType}");
            }
        }
    }

    /// <summary>Frees every buffer, then closes the checkpoint the views pointed into. Idempotent.</summary>
    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
        _checkpoint?.Dispose();
        _checkpoint = null;
    }
}
