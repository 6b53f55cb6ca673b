using System.Text.Json;

namespace Rellax.Runtime;

/// <summary>
/// The weights of a Hugging Face model directory: either one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (<c>{"weight_map": {tensor name: shard file name}}</c>).
/// Owns and disposes every shard it opened.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    /// <summary>File name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the shard index.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, SafeTensorsFile> _byName;
    private readonly List<string> _names;

    private SafeTensorsCheckpoint(string directory, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> byName, List<string> names)
    {
        Directory = directory;
        _files = files;
        _byName = byName;
        _names = names;
    }

    /// <summary>Full path of the model directory.</summary>
    public string Directory { get; }

    /// <summary>The opened files (one, or one per shard).</summary>
    public IReadOnlyList<SafeTensorsFile> Files => _files;

    /// <summary>All tensor names, in index order (sharded) or header order (single file).</summary>
    public IEnumerable<string> Names => _names;

    /// <summary>
    /// Opens the checkpoint in <paramref name="directory"/>: the shard index when present, otherwise
    /// <c>model.safetensors</c>.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="FileNotFoundException">Neither an index nor <c>model.safetensors</c> is present
    /// (the message says when a pickle checkpoint is there instead and how to convert it).</exception>
    /// <exception cref="SafeTensorsFormatException">The index is invalid (not JSON, no <c>weight_map</c>,
    /// a shard path that leaves the directory, a missing shard, a listed tensor absent from its shard) or a
    /// shard is an invalid safetensors file.</exception>
    public static SafeTensorsCheckpoint Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string dir = System.IO.Path.GetFullPath(directory);
        if (File.Exists(dir)) throw new IOException($"model directory '{directory}' is a file, not a folder");
        if (!System.IO.Directory.Exists(dir))
            throw new DirectoryNotFoundException($"Model directory not found: '{dir}'.");

        string index = System.IO.Path.Combine(dir, IndexFileName);
        if (File.Exists(index))
            return OpenSharded(dir, index);

        string single = System.IO.Path.Combine(dir, SingleFileName);
        if (File.Exists(single))
        {
            SafeTensorsFile file = SafeTensorsFile.Open(single);
            var byName = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            foreach (string n in file.Tensors.Keys) byName[n] = file;
            return new SafeTensorsCheckpoint(dir, [file], byName, [.. file.Tensors.Keys]);
        }

        string hint = File.Exists(System.IO.Path.Combine(dir, "pytorch_model.bin")) || File.Exists(System.IO.Path.Combine(dir, "pytorch_model.bin.index.json"))
            ? " The directory holds a pickle checkpoint (pytorch_model.bin), which is never unpickled here; convert it once with " +
              "`safetensors.torch.save_file(torch.load(p), out)` or `model.save_pretrained(dir, safe_serialization=True)`."
            : string.Empty;
        throw new FileNotFoundException($"No '{SingleFileName}' or '{IndexFileName}' in '{dir}'.{hint}", single);
    }

    private static SafeTensorsCheckpoint OpenSharded(string dir, string index)
    {
        var weightMap = new List<(string Tensor, string Shard)>();
        try
        {
            using JsonDocument doc = JsonDocument.Parse(InputPaths.ReadAllBytes(index, "shard index", InputPaths.MaxConfigBytes));
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out JsonElement map)
                || map.ValueKind != JsonValueKind.Object)
                throw new SafeTensorsFormatException(index, null, "the index must be a JSON object with a 'weight_map' object {tensor: shard file}.");
            foreach (JsonProperty p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new SafeTensorsFormatException(index, p.Name, $"weight_map value must be a shard file name string, found {p.Value.ValueKind}.");
                weightMap.Add((p.Name, p.Value.GetString()!));
            }
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(index, null, $"index is not valid JSON ({e.Message}).", e);
        }
        if (weightMap.Count == 0)
            throw new SafeTensorsFormatException(index, null, "'weight_map' is empty.");

        var files = new List<SafeTensorsFile>();
        try
        {
            var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            var byName = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
            var names = new List<string>(weightMap.Count);
            foreach ((string tensor, string shard) in weightMap)
            {
                if (!shards.TryGetValue(shard, out SafeTensorsFile? file))
                {
                    if (shard.Length == 0 || System.IO.Path.GetFileName(shard) != shard)
                        throw new SafeTensorsFormatException(index, tensor, $"shard '{shard}' must be a plain file name inside the model directory.");
                    string shardPath = System.IO.Path.Combine(dir, shard);
                    if (!File.Exists(shardPath))
                        throw new SafeTensorsFormatException(index, tensor, $"shard file '{shardPath}' does not exist.");
                    file = SafeTensorsFile.Open(shardPath);
                    files.Add(file);
                    shards.Add(shard, file);
                }
                if (!file.Contains(tensor))
                    throw new SafeTensorsFormatException(index, tensor, $"the index places this tensor in '{shard}', but that shard does not contain it.");
                if (!byName.TryAdd(tensor, file))
                    throw new SafeTensorsFormatException(index, tensor, "the tensor is listed twice in weight_map.");
                names.Add(tensor);
            }
            return new SafeTensorsCheckpoint(dir, files, byName, names);
        }
        catch
        {
            foreach (SafeTensorsFile f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>Whether the checkpoint holds <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>Header entry (dtype, shape, offsets) of <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message names it and the directory.</exception>
    public SafeTensorInfo Info(string name) => FileOf(name).Info(name);

    /// <summary>The file that holds <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafeTensorsFile FileOf(string name) =>
        _byName.TryGetValue(name, out SafeTensorsFile? f)
            ? f
            : throw new KeyNotFoundException($"Tensor '{name}' is not in the checkpoint at '{Directory}' ({_byName.Count} tensors).");

    /// <summary>Reads <paramref name="name"/> as a new float32 array; see <see cref="SafeTensorsFile.ReadFloat32(string)"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="NotSupportedException">The dtype is not F32/F16/BF16.</exception>
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);

    /// <summary>Reads <paramref name="name"/> as float32 into <paramref name="destination"/> (exactly ElementCount long);
    /// see <see cref="SafeTensorsFile.ReadFloat32(string, Span{float})"/>.</summary>
    /// <exception cref="ArgumentException">Wrong destination length.</exception>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    /// <exception cref="NotSupportedException">The dtype is not F32/F16/BF16.</exception>
    public void ReadFloat32(string name, Span<float> destination) => FileOf(name).ReadFloat32(name, destination);

    /// <summary>Disposes every opened shard. Idempotent.</summary>
    public void Dispose()
    {
        foreach (SafeTensorsFile f in _files) f.Dispose();
    }
}
