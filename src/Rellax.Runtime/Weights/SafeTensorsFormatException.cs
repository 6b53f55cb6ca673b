namespace Rellax.Runtime;

/// <summary>
/// A weight file is not a valid safetensors file (or is a pickle, which is never loaded).
/// The message names the file, the tensor when one is concerned, and what is wrong.
/// </summary>
public sealed class SafeTensorsFormatException : Exception
{
    /// <summary>Creates the exception; the message is composed from the parts.</summary>
    /// <param name="filePath">The file (or index file) that is invalid.</param>
    /// <param name="tensorName">The tensor concerned, or <see langword="null"/> for a file-level problem.</param>
    /// <param name="problem">What is wrong, as a sentence.</param>
    /// <param name="inner">The underlying error (e.g. a JSON parse error), if any.</param>
    public SafeTensorsFormatException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Compose(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    /// <summary>The file that is invalid.</summary>
    public string FilePath { get; }

    /// <summary>The tensor concerned, or <see langword="null"/>.</summary>
    public string? TensorName { get; }

    private static string Compose(string filePath, string? tensorName, string problem) =>
        tensorName is null
            ? $"Invalid safetensors file '{filePath}': {problem}"
            : $"Invalid safetensors file '{filePath}', tensor '{tensorName}': {problem}";
}
