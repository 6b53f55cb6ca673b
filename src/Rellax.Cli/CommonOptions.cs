using System.CommandLine;
using Rellax.Kernels;

namespace Rellax.Cli;

/// <summary>Options shared by the subcommands, and the helpers that turn them into runtime objects.</summary>
internal static class CommonOptions
{
    public static Option<string> Backend() => new("--backend")
    {
        Description = "Where kernels run: auto (cuda when a GPU is usable, else cpu), cpu, ilgpu or cuda.",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<int> Threads() => new("--threads")
    {
        Description = "CPU worker threads (0: one per core).",
        DefaultValueFactory = _ => 0,
    };

    /// <summary>The values <see cref="Attention"/> accepts, in the order shown to users.</summary>
    public static readonly string[] AttentionValues = ["fp32", "int8"];

    /// <summary>
    /// <c>--attention fp32|int8</c>: the model forward's attention scores. Any other value is a parse error that
    /// names the option and the allowed values.
    /// </summary>
    public static Option<string> Attention()
    {
        var option = new Option<string>("--attention")
        {
            Description = "Attention scores: fp32 (f32 KV cache) or int8 (SageAttention-style int8 Q·Kᵀ with smoothed keys, " +
                          "fp32 softmax and P·V; int8 KV cache, about 4x smaller at head size 128).",
            DefaultValueFactory = _ => "fp32",
            HelpName = "fp32|int8",
        };
        option.Validators.Add(r =>
        {
            string? value = r.GetValueOrDefault<string>();
            if (value is null || !AttentionValues.Contains(value, StringComparer.OrdinalIgnoreCase))
                r.AddError($"--attention must be one of {string.Join(", ", AttentionValues)}; got '{value}'");
        });
        return option;
    }

    /// <summary>Maps a validated <c>--attention</c> value onto the runtime's precision.</summary>
    public static AttentionPrecision ParseAttention(string value) => value.ToLowerInvariant() switch
    {
        "fp32" => AttentionPrecision.Fp32,
        "int8" => AttentionPrecision.Int8,
        _ => throw new ArgumentException($"--attention must be one of {string.Join(", ", AttentionValues)}; got '{value}'"),
    };

    /// <summary>The <c>--attention</c> spelling of <paramref name="precision"/> (as <c>--json</c> reports it).</summary>
    public static string Name(AttentionPrecision precision) => precision.ToString().ToLowerInvariant();

    public static Option<bool> Json() => new("--json") { Description = "Print one machine-readable JSON object instead of text." };

    public static Option<string?> Model() => new("--model")
    {
        Description = "Hugging Face model directory (config.json, model.safetensors, tokenizer.json). Default: the embedded stories260K.",
    };

    /// <summary>The embedded default model: next to the binary, else found by walking up from it (a source checkout).</summary>
    public static string DefaultModelDirectory()
    {
        const string relative = "models/stories260K";
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, relative);
            if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
        }
        throw new DirectoryNotFoundException($"the embedded model ({relative}) was not found next to {AppContext.BaseDirectory}; pass --model DIR");
    }

    /// <summary>Runs <paramref name="body"/>, turning expected failures into one line on stderr and exit code 1.</summary>
    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or NotSupportedException
                                      or UnauthorizedAccessException or FormatException or InvalidOperationException
                                      or Runtime.SafeTensorsFormatException or Runtime.LlamaConfigException)
        {
            Console.Error.WriteLine($"rellax: {e.Message}");
            return 1;
        }
    }

    public static ComputeBackend CreateBackend(string name, int threads)
    {
        var backend = Backends.Create(name, threads);
        if (backend is Kernels.Ilgpu.IlgpuBackend { Kind: Kernels.Ilgpu.IlgpuDeviceKind.CpuEmulator })
            Console.Error.WriteLine("rellax: warning: no GPU found; ilgpu runs on ILGPU's CPU emulator, which is for testing and very slow (use --backend cpu)");
        return backend;
    }
}
