using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// A Llama-family decoder (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM with its q/k/v biases) loaded from a
/// Hugging Face directory (<c>config.json</c>, <c>model.safetensors</c> or shards, <c>tokenizer.json</c>) onto a
/// <see cref="ComputeBackend"/>. Linear weights, the embedding and lm_head keep the checkpoint's dtype (F32, F16 or
/// BF16; the kernels widen half-precision elements on the fly) unless <see cref="ModelLoadOptions"/> asks for another
/// format (f32/bf16/f16 converted at load, or int8 quantized at load); norms and biases are f32. On the CPU backend aligned
/// tensors are read-only views of the memory-mapped checkpoint (no copy; the files stay open until
/// <see cref="Dispose"/>); GPU backends upload them.
/// The model is immutable and may be shared by several <see cref="LlamaSession"/>s used one at a time each.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    private readonly LlamaWeights _weights;
    private bool _disposed;

    private LlamaModel(string directory, LlamaConfig config, LlamaTokenizer tokenizer, LlamaWeights weights, ComputeBackend backend)
    {
        Directory = directory;
        Config = config;
        Tokenizer = tokenizer;
        _weights = weights;
        Backend = backend;
    }

    /// <summary>The directory the model was loaded from.</summary>
    public string Directory { get; }

    /// <summary>The parsed <c>config.json</c>.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The tokenizer from <c>tokenizer.json</c>.</summary>
    public LlamaTokenizer Tokenizer { get; }

    /// <summary>The backend the weights live on and the forward pass runs on.</summary>
    public ComputeBackend Backend { get; }

    internal LlamaWeights Weights => _weights;

    /// <summary>How the matrices are held (<see cref="ModelLoadOptions.Weights"/>).</summary>
    public WeightFormat WeightFormat => _weights.Format;

    /// <summary>Bytes of all weights as held on the backend (int8 values, scales and row sums; converted copies; mapped
    /// checkpoint tensors). RoPE tables and activations are not counted.</summary>
    public long WeightBytes => _weights.WeightBytes;

    /// <summary>Time spent quantizing or converting matrices at load (zero for <see cref="WeightFormat.Auto"/>).</summary>
    public TimeSpan WeightConversionTime => _weights.ConversionTime;

    /// <summary>Loads a model directory onto <paramref name="backend"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json, tokenizer.json or the weights are missing.</exception>
    /// <param name="directory">The model directory.</param>
    /// <param name="backend">Where the weights live and the forward runs.</param>
    /// <param name="options">Weight format (as stored, converted to f32/bf16/f16, or int8) and the int8 outlier threshold.</param>
    /// <exception cref="InvalidDataException">A tensor is missing, its shape disagrees with config.json, its dtype is not
    /// F32/F16/BF16, or attention biases are missing (attention_bias) or present without it; int8 was asked for and a
    /// matrix cannot be quantized (named).</exception>
    /// <exception cref="ArgumentOutOfRangeException">The outlier threshold is not a finite number &gt; 0.</exception>
    /// <exception cref="NotSupportedException">int8 weights on a backend without int8 kernels.</exception>
    /// <param name="progress">Receives <c>("load", parts loaded, num_hidden_layers + 2)</c>: after the embedding, after each
    /// layer, and after the final norm and LM head.</param>
    /// <param name="cancellationToken">Checked before each part; a cancelled load frees what it had placed on the backend
    /// and throws <see cref="OperationCanceledException"/>.</param>
    public static LlamaModel Load(string directory, ComputeBackend backend, ModelLoadOptions? options = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(backend);
        InputPaths.RequireDirectory(directory, "model directory");
        string configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath))
            throw new FileNotFoundException($"model directory '{directory}' has no config.json", configPath);
        if (options is not null)
        {
            Primitives.CheckOutlierThreshold(options.OutlierThreshold);
            if (!Enum.IsDefined(options.Weights)) throw new ArgumentOutOfRangeException(nameof(options), options.Weights, "unknown weight format");
        }
        cancellationToken.ThrowIfCancellationRequested();
        var config = LlamaConfig.Load(configPath);
        var tokenizer = LlamaTokenizer.Load(directory);
        // The weights take the checkpoint: on the CPU backend they are views of its mapping and keep it open.
        var weights = LlamaWeights.Load(SafeTensorsCheckpoint.Open(directory), config, backend, options, progress, cancellationToken);
        return new LlamaModel(Path.GetFullPath(directory), config, tokenizer, weights, backend);
    }

    /// <summary>
    /// Starts a new sequence with its own KV cache of <paramref name="maxPositions"/> positions
    /// (default: the config's <c>max_position_embeddings</c>).
    /// </summary>
    /// <param name="maxPositions">KV cache capacity in tokens, 1 to <c>max_position_embeddings</c>.</param>
    /// <param name="attention">Attention scores: <see cref="AttentionPrecision.Fp32"/> (the default; f32 KV cache) or
    /// <see cref="AttentionPrecision.Int8"/> (int8 KV cache, about 4x smaller for D = 128; see <see cref="LlamaSession"/>).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPositions"/> is out of range.</exception>
    /// <exception cref="ArgumentException">Int8 attention and a head dimension <see cref="FlashAttention"/> does not support
    /// (a multiple of <see cref="FlashAttention.HeadDimMultiple"/> up to <see cref="FlashAttention.MaxHeadDim"/>).</exception>
    /// <exception cref="NotSupportedException">Int8 attention on a backend with no attention kernels (thrown by the first
    /// <see cref="LlamaSession.Forward(ReadOnlySpan{int})"/>, when the kernels are first used).</exception>
    public LlamaSession CreateSession(int? maxPositions = null, AttentionPrecision attention = AttentionPrecision.Fp32)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int max = maxPositions ?? Config.MaxPositionEmbeddings;
        if (max < 1 || max > Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(maxPositions), max, $"must be in [1, {Config.MaxPositionEmbeddings}] (max_position_embeddings)");
        if (!Enum.IsDefined(attention))
            throw new ArgumentOutOfRangeException(nameof(attention), attention, "must be Fp32 or Int8");
        int d = Config.HeadDim;
        if (attention == AttentionPrecision.Int8 && (d % FlashAttention.HeadDimMultiple != 0 || d > FlashAttention.MaxHeadDim))
            throw new ArgumentException($"int8 attention needs a head dimension that is a multiple of {FlashAttention.HeadDimMultiple} " +
                $"up to {FlashAttention.MaxHeadDim}; this model's is {d}", nameof(attention));
        return new LlamaSession(this, max, attention);
    }

    /// <summary>Frees the weights on the backend and closes the checkpoint (the backend itself belongs to the caller).</summary>
    public void Dispose()
    {
        _disposed = true;
        _weights.Dispose();
    }
}
