using System.CommandLine;
using Rellax.Kernels;
using Rellax.Runtime;

namespace Rellax.Cli;

internal static partial class CommonOptions
{
    /// <summary><c>--weights auto|f32|bf16|f16|int8</c> and <c>--int8-threshold X</c>, built once for every model command.</summary>
    public static WeightOptions Weights() => new();

    /// <summary>
    /// Loads a model with the weight options and, when they changed the stored format, prints one line to stderr:
    /// the format, the conversion (quantization) time and the weights' resident memory.
    /// </summary>
    public static LlamaModel LoadModel(string directory, ComputeBackend backend, ModelLoadOptions weights)
    {
        var model = LlamaModel.Load(directory, backend, weights);
        if (weights.Weights != WeightFormat.Auto)
        {
            string what = weights.Weights == WeightFormat.Int8 ? $"quantized in {model.WeightConversionTime.TotalSeconds:F2} s (outlier threshold {weights.OutlierThreshold:G})"
                : $"converted in {model.WeightConversionTime.TotalSeconds:F2} s";
            Console.Error.WriteLine($"rellax: weights {ModelLoadOptions.Name(weights.Weights)}: {what}; {model.WeightBytes / 1048576.0:F1} MiB resident");
        }
        return model;
    }
}

/// <summary>The two weight options of a model command; add <see cref="Format"/> and <see cref="Threshold"/> to the command.</summary>
internal sealed class WeightOptions
{
    /// <summary><c>--weights</c>: how the model's matrices are held (a checked choice).</summary>
    public Option<string> Format { get; } = CommonOptions.Choice("--weights",
        "Model weights: auto (as stored), f32, bf16 or f16 (converted at load), or int8 (quantized at load per " +
        "output row, LLM.int8()-style linear layers with fp32 outlier columns; cpu backend; a quarter of f32).",
        "auto", [.. ModelLoadOptions.WeightNames]);

    /// <summary><c>--int8-threshold</c>: the LLM.int8() outlier threshold (a checked real number).</summary>
    public Option<double> Threshold { get; } = CommonOptions.Number("--int8-threshold", 0, true, 1e6,
        "With --weights int8: input columns with some |x| above this stay in fp32 (bitsandbytes' default 6).", Primitives.DefaultOutlierThreshold);

    /// <summary>The validated values as load options.</summary>
    public ModelLoadOptions Parse(ParseResult r) => new()
    {
        Weights = ModelLoadOptions.ParseWeights(r.GetValue(Format)!), OutlierThreshold = (float)r.GetValue(Threshold),
    };
}
