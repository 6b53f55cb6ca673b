namespace Rellax.Rec;

/// <summary>
/// The folder <c>rellax prepare</c> writes and <c>rellax eval</c> reads: a dataset with its ReLLa samples.
/// PLACEHOLDER (samples helper): the documented file format (manifest, items, users, timelines, samples as JSONL).
/// </summary>
public static class PreparedDataset
{
    /// <summary>The manifest's file name inside the folder.</summary>
    public const string ManifestFileName = "dataset.json";

    /// <summary>The items file (JSONL, one <c>{"id", "key", "title", ..., "text"}</c> per item, readable by <c>rellax embed</c>).</summary>
    public const string ItemsFileName = "items.jsonl";

    /// <summary>Writes <paramref name="samples"/> (and its dataset) to <paramref name="directory"/>, atomically: the files are
    /// written into a temporary folder beside it that replaces the folder at the end.</summary>
    public static void Save(SampleSet samples, string directory) => throw new NotImplementedException("PLACEHOLDER: PreparedDataset.Save");

    /// <summary>Reads a folder written by <see cref="Save"/>.</summary>
    /// <exception cref="InvalidDataException">A malformed file; the message names the file and line.</exception>
    public static SampleSet Load(string directory) => throw new NotImplementedException("PLACEHOLDER: PreparedDataset.Load");
}
