using System.CommandLine;
using Rellax.Kernels;

namespace Rellax.Cli;

/// <summary>Options shared by the subcommands, and the helpers that turn them into runtime objects.</summary>
internal static partial class CommonOptions
{
    /// <summary><c>--backend auto|cpu|ilgpu|cuda</c>: where kernels run (<see cref="Backends.Create"/>).</summary>
    public static Option<string> Backend() => Choice("--backend",
        "Where kernels run: auto (cuda when a GPU is usable, else cpu), cpu, ilgpu or cuda.", "auto", "auto", "cpu", "ilgpu", "cuda");

    /// <summary>The most <c>--threads</c> a command accepts (checked before any thread pool is made).</summary>
    public const int MaxThreads = 1024;

    /// <summary>The most <c>--batch-size</c> a command accepts (checked before any batch is allocated).</summary>
    public const int MaxBatchSize = 1 << 16;

    public static Option<int> Threads() => Int("--threads", 0, MaxThreads, "CPU worker threads (0: one per core).", 0);

    /// <summary>
    /// An integer option: its value must parse as an integer (invariant culture, no fraction) in
    /// [<paramref name="min"/>, <paramref name="max"/>]; anything else (empty, non-numeric, fractional, out of range) is a
    /// parse error that names the option and the value, and the command never runs.
    /// </summary>
    /// <param name="name">The option, e.g. <c>--k</c>.</param>
    /// <param name="min">Smallest accepted value.</param>
    /// <param name="max">Largest accepted value: resource options (threads, batch sizes, counts) get a sane bound here,
    /// checked before anything is allocated.</param>
    /// <param name="description">Help text (the accepted range is appended).</param>
    /// <param name="defaultValue">The value when the option is absent; null: the option is required.</param>
    /// <param name="aliases">Other spellings (kept for compatibility).</param>
    public static Option<int> Int(string name, int min, int max, string description, int? defaultValue, params string[] aliases)
    {
        var option = new Option<int>(name, aliases)
        {
            Description = $"{description} [{Range(min, max)}]",
            HelpName = "N",
            Required = defaultValue is null,
            CustomParser = r => ParseInt(r, name, min, max) ?? defaultValue ?? 0,
        };
        if (defaultValue is int d) option.DefaultValueFactory = _ => d;
        Bounds.Add(option, new IntBounds(min, max));
        return option;
    }

    /// <summary>The accepted range of an option made by <see cref="Int"/> or <see cref="OptionalInt"/> (tests feed every
    /// such option values just outside it, and check that no integer option bypasses these parsers).</summary>
    internal sealed record IntBounds(int Min, int Max);

    /// <summary>See <see cref="IntBounds"/>.</summary>
    internal static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Option, IntBounds> Bounds = new();

    /// <summary>An optional integer option with no default (null when absent); values checked as in <see cref="Int"/>.</summary>
    public static Option<int?> OptionalInt(string name, int min, int max, string description, params string[] aliases)
    {
        var option = new Option<int?>(name, aliases)
        {
            Description = $"{description} [{Range(min, max)}]",
            HelpName = "N",
            CustomParser = r => ParseInt(r, name, min, max),
        };
        Bounds.Add(option, new IntBounds(min, max));
        return option;
    }

    /// <summary>
    /// A real-valued option (learning rates, decays, probabilities) with a checked parser: a value that is not a finite
    /// number (text, empty, NaN, ∞, an overflow such as <c>1e999</c>) or is outside the range gives one line naming the
    /// option and the value.
    /// </summary>
    /// <param name="name">The option, e.g. <c>--lr</c>.</param>
    /// <param name="min">Smallest accepted value (excluded when <paramref name="minExclusive"/>).</param>
    /// <param name="minExclusive">Whether <paramref name="min"/> itself is refused (e.g. a learning rate must be &gt; 0).</param>
    /// <param name="max">Largest accepted value (included); <see cref="double.PositiveInfinity"/>: any finite value.</param>
    /// <param name="description">Help text (the accepted range is appended).</param>
    /// <param name="defaultValue">The value when the option is absent.</param>
    public static Option<double> Number(string name, double min, bool minExclusive, double max, string description, double defaultValue)
    {
        string range = $"{(minExclusive ? "> " : ">= ")}{Show(min)}" + (double.IsPositiveInfinity(max) ? "" : $" and <= {Show(max)}");
        var option = new Option<double>(name)
        {
            Description = $"{description} [{range}]",
            HelpName = "X",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) { r.AddError($"{name} needs a value: a number {range}"); return defaultValue; }
                string text = r.Tokens[^1].Value;
                if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value)
                    || !double.IsFinite(value))
                {
                    r.AddError(text.Trim().Length == 0 ? $"{name}: the value is empty; expected a number {range}"
                        : $"{name}: '{text}' is not a finite number; expected a number {range}");
                    return defaultValue;
                }
                if (value < min || (minExclusive && value == min) || value > max)
                {
                    r.AddError($"{name} must be {range}, got {text}");
                    return defaultValue;
                }
                return value;
            },
        };
        NumberBounds.Add(option, new RealBounds(min, minExclusive, max));
        return option;

        static string Show(double v) => v.ToString("G", System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>The accepted range of an option made by <see cref="Number"/> (tests feed it values just outside).</summary>
    internal sealed record RealBounds(double Min, bool MinExclusive, double Max);

    /// <summary>See <see cref="RealBounds"/>.</summary>
    internal static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Option, RealBounds> NumberBounds = new();

    private static string Range(int min, int max) =>
        min == int.MinValue && max == int.MaxValue ? "any integer" : max == int.MaxValue ? $"{min} or more" : $"{min} to {max}";

    private static int? ParseInt(System.CommandLine.Parsing.ArgumentResult r, string name, int min, int max)
    {
        if (r.Tokens.Count == 0)
        {
            r.AddError($"{name} needs a value: an integer, {Range(min, max)}");
            return null;
        }
        string text = r.Tokens[^1].Value;
        if (!long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long value))
        {
            r.AddError(text.Length == 0 ? $"{name}: the value is empty; expected an integer, {Range(min, max)}"
                : $"{name}: '{text}' is not an integer; expected {Range(min, max)}");
            return null;
        }
        if (value < min || value > max)
        {
            r.AddError(value < min ? $"{name} must be >= {min}, got {text}" : $"{name} must be <= {max}, got {text}");
            return null;
        }
        return (int)value;
    }

    /// <summary>
    /// A choice option: one of <paramref name="values"/> (case-insensitive; the value comes back as listed); anything else
    /// is a parse error naming the option, the value and the choices.
    /// </summary>
    public static Option<string> Choice(string name, string description, string defaultValue, params string[] values) => new(name)
    {
        Description = description,
        HelpName = string.Join("|", values),
        DefaultValueFactory = _ => defaultValue,
        CustomParser = r =>
        {
            string text = r.Tokens.Count == 0 ? "" : r.Tokens[^1].Value;
            foreach (string v in values)
                if (string.Equals(v, text, StringComparison.OrdinalIgnoreCase)) return v;
            r.AddError($"{name} must be one of {string.Join(", ", values)}; got '{text}'");
            return defaultValue;
        },
    };

    /// <summary>The values <see cref="Attention"/> accepts, in the order shown to users.</summary>
    public static readonly string[] AttentionValues = ["fp32", "int8"];

    /// <summary>
    /// <c>--attention fp32|int8</c>: the model forward's attention scores. Any other value is a parse error that
    /// names the option and the allowed values.
    /// </summary>
    public static Option<string> Attention() => Choice("--attention",
        "Attention scores: fp32 (f32 KV cache) or int8 (SageAttention-style int8 Q·Kᵀ with smoothed keys, " +
        "fp32 softmax and P·V; int8 KV cache, about 4x smaller at head size 128).", "fp32", AttentionValues);

    /// <summary>Maps a validated <c>--attention</c> value onto the runtime's precision.</summary>
    public static AttentionPrecision ParseAttention(string value) => value.ToLowerInvariant() switch
    {
        "fp32" => AttentionPrecision.Fp32,
        "int8" => AttentionPrecision.Int8,
        _ => throw new ArgumentException($"--attention must be one of {string.Join(", ", AttentionValues)}; got '{value}'"),
    };

    /// <summary>The <c>--attention</c> spelling of <paramref name="precision"/> (as <c>--json</c> reports it).</summary>
    public static string Name(AttentionPrecision precision) => precision.ToString().ToLowerInvariant();

    /// <summary><c>--batch-size N</c> (1 to <see cref="MaxBatchSize"/>) with the command's own default and meaning.</summary>
    public static Option<int> BatchSize(int defaultValue, string description) => Int("--batch-size", 1, MaxBatchSize, description, defaultValue);

    /// <summary><c>--seed N</c>: any integer, with the command's default (one name and meaning in every command).</summary>
    public static Option<int> Seed(int defaultValue, string description) => Int("--seed", int.MinValue, int.MaxValue, description, defaultValue);

    /// <summary><c>--pca-seed N</c> (old spelling <c>--seed</c>): the seed of the PCA's random projection, 0 by default in
    /// every command that fits a PCA.</summary>
    public static Option<int> PcaSeed() =>
        Int("--pca-seed", int.MinValue, int.MaxValue, "Seed of the PCA's random projection.", 0, "--seed");

    /// <summary>
    /// <c>--item-vectors FILE</c> (old spelling <c>--vectors</c>): the item-vectors file, one name in every command: safetensors
    /// with <c>vectors</c> or <c>embeddings</c> [items, D] and <c>item_ids</c> I64 [items], as <c>rellax embed</c> writes.
    /// </summary>
    public static Option<string?> ItemVectors(bool required, string? use = null) => new("--item-vectors", "--vectors")
    {
        HelpName = "FILE",
        Description = "Item vectors: safetensors 'vectors' or 'embeddings' [items, D] (F32/F16/BF16) with 'item_ids' I64 [items], as rellax embed writes" +
                      (use is null ? "." : $"; {use}"),
        Required = required,
    };

    /// <summary><c>--split train|valid|test</c> of a prepared dataset, with the command's default.</summary>
    public static Option<string> Split(string defaultValue) => Choice("--split", "train, valid or test.", defaultValue, "train", "valid", "test");

    /// <summary>Maps a validated <see cref="Split"/> value onto <see cref="Rec.SampleSplit"/>.</summary>
    public static Rec.SampleSplit ParseSplit(string value) => value switch
    {
        "train" => Rec.SampleSplit.Train,
        "valid" => Rec.SampleSplit.Valid,
        _ => Rec.SampleSplit.Test,
    };

    /// <summary>The most PCA components a command accepts.</summary>
    public const int MaxPca = 1 << 16;

    /// <summary>
    /// <c>--pca N</c>, the same rule in every command: a size the user gives that is larger than min(items, dimension) is
    /// refused (<see cref="CheckPca"/>) before any work; only a command's own default (eval's and export's SPEC 512) is
    /// capped, and then with a warning (<see cref="Rec.Pca.Honour"/>).
    /// </summary>
    /// <param name="defaultValue">The command's default; null: no PCA unless asked, and 0 is not accepted.</param>
    /// <param name="description">Help text.</param>
    public static Option<int> Pca(int defaultValue, string description) =>
        Int("--pca", 0, MaxPca, description + " A size above min(items, dimension) is refused; the default is capped to it, with a warning.", defaultValue);

    /// <summary>See <see cref="Pca(int, string)"/>: an optional <c>--pca N</c> (1 or more) with no default.</summary>
    public static Option<int?> OptionalPca(string description) => OptionalInt("--pca", 1, MaxPca, description + " At most min(items, dimension).");

    /// <summary>A <see cref="Pca(int, string)"/> value as the library takes it: null for 0.</summary>
    public static int? PcaOrNull(int value) => value > 0 ? value : null;

    /// <summary>Refuses an explicit <c>--pca</c> larger than min(items, dimension), or any PCA of fewer than 2 items.</summary>
    /// <exception cref="ArgumentException">The request cannot be honoured; the message gives the bound.</exception>
    public static void CheckPca(int? requested, long items, int dim, string dimName)
    {
        if (requested is not int k) return;
        long most = Math.Min(items, dim);
        if (k > most || items < 2)
            throw new ArgumentException($"--pca {k} must be at most min(items, {dimName}) = min({items}, {dim}) = {most}" +
                (items < 2 ? " and PCA needs at least 2 items" : ""));
    }

    /// <summary><c>--template vicuna|none</c>: the chat template around each prompt (<see cref="Runtime.PromptTemplate"/>).</summary>
    public static Option<string> Template(string description) => Choice("--template", description, "vicuna", [.. Runtime.PromptTemplate.Names]);

    public static Option<bool> Json() => new("--json") { Description = "Print one machine-readable JSON object instead of text." };

    public static Option<string?> Model() => new("--model")
    {
        HelpName = "DIR",
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

    /// <summary>
    /// Runs <paramref name="body"/> with a token that the first SIGINT (Ctrl+C) or SIGTERM cancels (a second one ends the
    /// process as usual). The command stops between units of work, its outputs remove their temporary files and folders
    /// (<see cref="Runtime.OutputFile"/>), what existed before is kept, and it exits with 130 after one line,
    /// <c>rellax: cancelled</c>. Failures are as in <see cref="Guard(Func{int})"/>.
    /// </summary>
    public static int Guard(Func<CancellationToken, int> body)
    {
        using var cancel = new SignalCancellation();
        TestHooks.Install(cancel.Token);
        return Guard(() => body(cancel.Token));
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
