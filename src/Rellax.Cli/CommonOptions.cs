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

    /// <summary><c>--batch-size N</c> (at least 1) with the command's own default and meaning.</summary>
    public static Option<int> BatchSize(int defaultValue, string description)
    {
        var option = new Option<int>("--batch-size") { Description = description, DefaultValueFactory = _ => defaultValue };
        option.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 1) r.AddError($"--batch-size must be >= 1, got {r.GetValueOrDefault<int>()}"); });
        return option;
    }

    /// <summary><c>--template vicuna|none</c>: the chat template around each prompt (<see cref="Runtime.PromptTemplate"/>).</summary>
    public static Option<string> Template(string description) => new Option<string>("--template")
    {
        Description = description,
        DefaultValueFactory = _ => "vicuna",
        HelpName = string.Join("|", Runtime.PromptTemplate.Names),
    }.AcceptOnlyFromAmong([.. Runtime.PromptTemplate.Names]);

    /// <summary>
    /// Fails early, before any model is loaded, when <paramref name="outputPath"/> could not be written at the end: its
    /// folder does not exist, or the path is a folder.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The output's folder is missing.</exception>
    /// <exception cref="IOException">The output path is an existing folder.</exception>
    public static void CheckOutputPath(string outputPath, string option = "--output")
    {
        string full = Path.GetFullPath(outputPath);
        if (Directory.Exists(full)) throw new IOException($"{option} '{outputPath}' is a folder, not a file");
        string? dir = Path.GetDirectoryName(full);
        if (dir is not null && !Directory.Exists(dir)) throw new DirectoryNotFoundException($"{option} '{outputPath}': folder '{dir}' does not exist");
    }

    /// <summary>
    /// Writes <paramref name="path"/> atomically: <paramref name="write"/> fills a temporary file beside it
    /// (<c>PATH.tmp-PID-GUID</c>), which is flushed to disk and renamed over <paramref name="path"/>. If anything fails, the
    /// temporary file is deleted and whatever was at <paramref name="path"/> before is left as it was.
    /// </summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temp = full + $".tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// A token cancelled by the first Ctrl+C (the command then stops between batches, cleans up its temporary files and
    /// exits with 130); a second Ctrl+C kills the process as usual. Dispose to unregister.
    /// </summary>
    public static CtrlCCancellation CancelOnCtrlC() => new();

    /// <summary>See <see cref="CancelOnCtrlC"/>.</summary>
    internal sealed class CtrlCCancellation : IDisposable
    {
        private readonly CancellationTokenSource _source = new();

        public CtrlCCancellation() => Console.CancelKeyPress += OnCancel;

        /// <summary>Cancelled on Ctrl+C.</summary>
        public CancellationToken Token => _source.Token;

        private void OnCancel(object? sender, ConsoleCancelEventArgs e)
        {
            if (_source.IsCancellationRequested) return;
            e.Cancel = true;
            _source.Cancel();
        }

        public void Dispose()
        {
            Console.CancelKeyPress -= OnCancel;
            _source.Dispose();
        }
    }

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
        catch (Exception e) when (e is Runtime.RecordException or ArgumentException or KeyNotFoundException or IOException or InvalidDataException or NotSupportedException
                                      or UnauthorizedAccessException or FormatException or InvalidOperationException
                                      or Runtime.SafeTensorsFormatException or Runtime.LlamaConfigException)
        {
            Console.Error.WriteLine($"rellax: {MessageOf(e)}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("rellax: cancelled");
            return 130;
        }
    }

    /// <summary>The exception's message for a user, on one line: without the <c>(Parameter 'x')</c> suffix .NET adds to
    /// argument errors, which names a C# parameter the user never saw, nor the <c>Actual value was ...</c> line of an
    /// <see cref="ArgumentOutOfRangeException"/>.</summary>
    internal static string MessageOf(Exception e) => Runtime.ExceptionText.OneLine(e);

    public static ComputeBackend CreateBackend(string name, int threads)
    {
        var backend = Backends.Create(name, threads);
        if (backend is Kernels.Ilgpu.IlgpuBackend { Kind: Kernels.Ilgpu.IlgpuDeviceKind.CpuEmulator })
            Console.Error.WriteLine("rellax: warning: no GPU found; ilgpu runs on ILGPU's CPU emulator, which is for testing and very slow (use --backend cpu)");
        return backend;
    }
}
