using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// The folder <c>rellax prepare</c> writes and <c>rellax eval</c> reads: a dataset with its ReLLa samples
/// (<see cref="SampleSet"/>), as five UTF-8 files. JSONL files hold one JSON object per line, <c>\n</c>-terminated; readers
/// skip blank lines and ignore fields they do not know. Every <c>id</c>, <c>user</c> and <c>item</c> is a 0-based dense
/// row; the source's own ids are the <c>key</c>s.
/// </summary>
/// <remarks>
/// <list type="table">
/// <item><term><c>dataset.json</c></term><description>The manifest, one JSON object:
/// <c>{"format": "rellax-prepared-dataset", "version": 1, "name": "movielens-100k", "kind": "movielens-100k"</c> (a
/// <see cref="DatasetReader.Names"/> entry or <c>custom</c>), <c>"domain": "movies"|"books", "has_timestamps": true,
/// "has_profiles": true, "label_threshold": 3, "skipped_lines": 0, "filtered_ratings": 0, "protocol": "time-ordered"|"hold-out",
/// "options": {"min_history": 5, "train_fraction": 0.8, "valid_fraction": 0.1, "seed": 42, "limit": 0,
/// "shuffle_hold_out": true}, "counts": {"items": I, "users": U, "ratings": R, "samples": S, "train": a, "valid": b,
/// "test": c}}</c>. <c>counts.train/valid/test</c> count the samples in the folder (after the limit).</description></item>
/// <item><term><c>items.jsonl</c></term><description>I lines, line k is item k: <c>{"id": k, "key": "1", "title": "Toy
/// Story (1995)", "genres": ["Animation", ...], "author": ..., "year": ..., "publisher": ..., "isbn": ..., "text": "Here is
/// a movie. ..."}</c>; the four book fields appear only when set; <c>text</c> is <see cref="ItemText.Describe"/>, so
/// <c>rellax embed --items items.jsonl</c> reads the file as is (it needs the int64 <c>id</c> and <c>text</c>).</description></item>
/// <item><term><c>users.jsonl</c></term><description>U lines, line k is user k: <c>{"id": k, "key": "196"}</c>, plus
/// <c>"gender", "age", "job", "location"</c> (string or null) when the dataset has profiles.</description></item>
/// <item><term><c>timelines.jsonl</c></term><description>U lines, line k is user k's timeline
/// (<see cref="SampleSet.Timeline"/>, history order): <c>{"user": k, "items": [...], "ratings": [...], "timestamps":
/// [...], "rows": [...]}</c>, four arrays of equal length; <c>rows</c> are the events' positions in the dataset's ratings
/// in file order (<see cref="RatingDataset.Ratings"/>), so the dataset is rebuilt exactly. Every rating appears once.</description></item>
/// <item><term><c>samples.jsonl</c></term><description>S lines in global order, line k is sample k: <c>{"id": k, "split":
/// "train"|"valid"|"test", "user": u, "item": i, "rating": 4, "label": 1, "timestamp": 881250949, "history": h}</c>: the
/// history is the first <c>h</c> events of user <c>u</c>'s timeline and the target is event <c>h</c> (never copied: ML-25M
/// would be quadratic).</description></item>
/// </list>
/// <para>Ratings are written as the shortest text that reads back to the same float (<c>4</c>, <c>3.5</c>).
/// <see cref="Save"/> is atomic; <see cref="Load"/> checks everything and rebuilds an identical <see cref="SampleSet"/>.</para>
/// </remarks>
public static class PreparedDataset
{
    /// <summary>The manifest's file name inside the folder.</summary>
    public const string ManifestFileName = "dataset.json";

    /// <summary>The items file (JSONL, one <c>{"id", "key", "title", ..., "text"}</c> per item, readable by <c>rellax embed</c>).</summary>
    public const string ItemsFileName = "items.jsonl";

    /// <summary>The users file (JSONL, one <c>{"id", "key", profile fields}</c> per user).</summary>
    public const string UsersFileName = "users.jsonl";

    /// <summary>The timelines file (JSONL, one <c>{"user", "items", "ratings", "timestamps", "rows"}</c> per user).</summary>
    public const string TimelinesFileName = "timelines.jsonl";

    /// <summary>The samples file (JSONL, one <c>{"id", "split", "user", "item", "rating", "label", "timestamp", "history"}</c> per sample).</summary>
    public const string SamplesFileName = "samples.jsonl";

    /// <summary>The manifest's <c>format</c>.</summary>
    public const string Format = "rellax-prepared-dataset";

    /// <summary>The manifest's <c>version</c> this code writes and reads.</summary>
    public const int Version = 1;

    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes <paramref name="samples"/> (and its dataset) to <paramref name="directory"/>, atomically, through
    /// <see cref="OutputFile.WriteFolder"/>: the files are written into a temporary folder beside it that replaces the folder
    /// at the end.</summary>
    /// <param name="samples">What to write.</param>
    /// <param name="directory">The folder to create or replace. Its parent must exist. An existing folder is replaced only when
    /// it is empty or holds a <c>dataset.json</c> (an earlier prepared dataset); anything else is refused.</param>
    /// <param name="cancellationToken">Checked between files and before the rename.</param>
    /// <exception cref="ArgumentException">The timelines of <paramref name="samples"/> do not hold every rating of its dataset
    /// exactly once (<see cref="ReLLaSamples.Build"/> always makes them so).</exception>
    /// <exception cref="DirectoryNotFoundException">The parent folder does not exist.</exception>
    /// <exception cref="IOException">The target is a file or a folder that is not a prepared dataset, or writing failed;
    /// whatever was at <paramref name="directory"/> before is then left as it was and no temporary folder remains.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; as for a failure, nothing changed.</exception>
    public static void Save(SampleSet samples, string directory, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        OutputFile.WriteFolder(directory, RefuseReason, temp =>
        {
            WriteFile(Path.Combine(temp, ItemsFileName), stream => { using var lines = new JsonLines(stream); WriteItems(lines, samples.Dataset); });
            cancellationToken.ThrowIfCancellationRequested();
            WriteFile(Path.Combine(temp, UsersFileName), stream => { using var lines = new JsonLines(stream); WriteUsers(lines, samples.Dataset); });
            cancellationToken.ThrowIfCancellationRequested();
            WriteFile(Path.Combine(temp, TimelinesFileName), stream => WriteTimelines(stream, samples));
            cancellationToken.ThrowIfCancellationRequested();
            WriteFile(Path.Combine(temp, SamplesFileName), stream => WriteSamples(stream, samples));
            WriteManifest(Path.Combine(temp, ManifestFileName), samples);
        }, cancellationToken);
    }

    /// <summary>
    /// Fails unless <paramref name="directory"/> can be written by <see cref="Save"/>: its parent exists, and it is absent,
    /// an empty folder or an earlier prepared dataset, and it is not (and does not hold) one of <paramref name="inputs"/>.
    /// Commands call it before long work.
    /// </summary>
    /// <param name="directory">The output folder.</param>
    /// <param name="inputs">The command's input files and folders.</param>
    /// <exception cref="DirectoryNotFoundException">The parent folder does not exist.</exception>
    /// <exception cref="IOException">The target is a file, a folder that is not a prepared dataset, or holds an input.</exception>
    public static void CheckTarget(string directory, params IEnumerable<string?> inputs) =>
        OutputFile.CheckFolder(directory, "output folder", RefuseReason, inputs);

    /// <summary>Why an existing folder must not be replaced by a prepared dataset, or null when it may be.</summary>
    private static string? RefuseReason(string folder) =>
        !File.Exists(Path.Combine(folder, ManifestFileName)) && Directory.EnumerateFileSystemEntries(folder).Any()
            ? $"exists, is not empty and is not a prepared dataset (no {ManifestFileName})"
            : null;

    private static void WriteFile(string path, Action<Stream> write)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        write(stream);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>A JSONL writer: one <see cref="Utf8JsonWriter"/> reset after every line.</summary>
    private sealed class JsonLines(Stream stream) : IDisposable
    {
        public Utf8JsonWriter Writer { get; } = new(stream, WriterOptions);

        public void EndLine()
        {
            Writer.Flush();
            stream.WriteByte((byte)'\n');
            Writer.Reset();
        }

        public void Dispose() => Writer.Dispose();
    }

    private static void WriteItems(JsonLines lines, RatingDataset dataset)
    {
        var w = lines.Writer;
        for (int i = 0; i < dataset.Items.Count; i++)
        {
            var item = dataset.Items[i];
            w.WriteStartObject();
            w.WriteNumber("id", i);
            w.WriteString("key", item.Key);
            w.WriteString("title", item.Title);
            w.WriteStartArray("genres");
            foreach (var g in item.Genres) w.WriteStringValue(g);
            w.WriteEndArray();
            if (item.Author is not null) w.WriteString("author", item.Author);
            if (item.Year is not null) w.WriteString("year", item.Year);
            if (item.Publisher is not null) w.WriteString("publisher", item.Publisher);
            if (item.Isbn is not null) w.WriteString("isbn", item.Isbn);
            w.WriteString("text", ItemText.Describe(item, dataset.Domain));
            w.WriteEndObject();
            lines.EndLine();
        }
    }

    private static void WriteUsers(JsonLines lines, RatingDataset dataset)
    {
        var w = lines.Writer;
        for (int u = 0; u < dataset.UserKeys.Count; u++)
        {
            w.WriteStartObject();
            w.WriteNumber("id", u);
            w.WriteString("key", dataset.UserKeys[u]);
            if (dataset.Profiles is { } profiles)
            {
                var p = profiles[u];
                w.WriteString("gender", p.Gender);
                w.WriteString("age", p.Age);
                w.WriteString("job", p.Job);
                w.WriteString("location", p.Location);
            }
            w.WriteEndObject();
            lines.EndLine();
        }
    }

    private static void WriteTimelines(Stream stream, SampleSet samples)
    {
        var rows = RowsOfTimelines(samples);
        var o = new NumberLines(stream);
        int offset = 0;
        for (int u = 0; u < samples.Dataset.UserKeys.Count; u++)
        {
            var t = samples.Timeline(u);
            o.Raw("{\"user\":"u8); o.Int(u);
            o.Raw(",\"items\":["u8);
            for (int e = 0; e < t.Length; e++) { if (e > 0) o.Raw(","u8); o.Int(t[e].Item); }
            o.Raw("],\"ratings\":["u8);
            for (int e = 0; e < t.Length; e++) { if (e > 0) o.Raw(","u8); o.Float(t[e].Value); }
            o.Raw("],\"timestamps\":["u8);
            for (int e = 0; e < t.Length; e++) { if (e > 0) o.Raw(","u8); o.Int(t[e].Timestamp); }
            o.Raw("],\"rows\":["u8);
            for (int e = 0; e < t.Length; e++) { if (e > 0) o.Raw(","u8); o.Int(rows[offset + e]); }
            o.Raw("]}\n"u8);
            offset += t.Length;
        }
        o.Flush();
    }

    /// <summary>
    /// For every timeline event (users in order, each timeline in order), its position in the dataset's ratings. Per user,
    /// the user's file positions and timeline positions are both sorted by (item, timestamp, rating) and paired; identical
    /// ratings of one user (indistinguishable) pair in file order. No per-event objects: two int arrays and per-user sorts.
    /// [ratings] ints.
    /// </summary>
    private static int[] RowsOfTimelines(SampleSet samples)
    {
        var dataset = samples.Dataset;
        var ratings = dataset.Ratings;
        int users = dataset.UserKeys.Count, n = ratings.Length;
        var start = new int[users + 1];
        for (int u = 0; u < users; u++) start[u + 1] = start[u] + samples.Timeline(u).Length;
        if (start[users] != n)
            throw new ArgumentException($"the timelines hold {start[users]} events but the dataset has {n} ratings; a prepared dataset needs every rating in exactly one timeline (as ReLLaSamples.Build makes them)", nameof(samples));
        var fileRows = new int[n];   // each user's file positions, grouped like the timelines
        var fill = new int[users];
        var span = ratings.Span;
        for (int i = 0; i < n; i++)
        {
            int u = span[i].User;
            if (fill[u] == start[u + 1] - start[u]) throw new ArgumentException($"user {u} has more ratings than timeline events; a prepared dataset needs every rating in exactly one timeline", nameof(samples));
            fileRows[start[u] + fill[u]++] = i;
        }
        var result = new int[n];
        var timelinePositions = new int[n];
        for (int u = 0; u < users; u++)
        {
            int length = start[u + 1] - start[u];
            if (length == 0) continue;
            var rows = fileRows.AsSpan(start[u], length);
            rows.Sort((a, b) => { int c = Compare(ratings.Span[a], ratings.Span[b]); return c != 0 ? c : a.CompareTo(b); });
            var positions = timelinePositions.AsSpan(start[u], length);
            for (int e = 0; e < length; e++) positions[e] = e;
            int user = u;
            positions.Sort((a, b) => { var t = samples.Timeline(user); int c = Compare(t[a], t[b]); return c != 0 ? c : a.CompareTo(b); });
            var timeline = samples.Timeline(u);
            for (int k = 0; k < length; k++)
            {
                if (Compare(timeline[positions[k]], span[rows[k]]) != 0)
                    throw new ArgumentException($"user {u}'s timeline event {positions[k]} is not one of the user's ratings in the dataset", nameof(samples));
                result[start[u] + positions[k]] = rows[k];
            }
        }
        return result;

        static int Compare(in Rating x, in Rating y)
        {
            int c = x.Item.CompareTo(y.Item);
            if (c == 0) c = x.Timestamp.CompareTo(y.Timestamp);
            return c != 0 ? c : x.Value.CompareTo(y.Value);
        }
    }

    private static void WriteSamples(Stream stream, SampleSet samples)
    {
        var o = new NumberLines(stream);
        foreach (var x in samples.Samples)
        {
            o.Raw("{\"id\":"u8); o.Int(x.Index);
            o.Raw(x.Split switch { SampleSplit.Train => ",\"split\":\"train\",\"user\":"u8, SampleSplit.Valid => ",\"split\":\"valid\",\"user\":"u8, _ => ",\"split\":\"test\",\"user\":"u8 });
            o.Int(x.User);
            o.Raw(",\"item\":"u8); o.Int(x.Item);
            o.Raw(",\"rating\":"u8); o.Float(x.Rating);
            o.Raw(x.Label ? ",\"label\":1,\"timestamp\":"u8 : ",\"label\":0,\"timestamp\":"u8); o.Int(x.Timestamp);
            o.Raw(",\"history\":"u8); o.Int(x.HistoryLength);
            o.Raw("}\n"u8);
        }
        o.Flush();
    }

    /// <summary>
    /// A buffered writer of JSON text made only of fixed ASCII pieces, integers and finite floats (the two large files, which
    /// hold no strings): about 4x faster than a <see cref="Utf8JsonWriter"/> reset per line. Floats are written in their
    /// shortest round-trip form (<c>4</c>, <c>3.5</c>, <c>1E-05</c>), which is valid JSON.
    /// </summary>
    private sealed class NumberLines(Stream stream)
    {
        private readonly byte[] _buffer = new byte[1 << 16];
        private int _used;

        public void Raw(ReadOnlySpan<byte> ascii)
        {
            if (_used + ascii.Length > _buffer.Length) Flush();
            ascii.CopyTo(_buffer.AsSpan(_used));
            _used += ascii.Length;
        }

        public void Int(long value)
        {
            if (_used + 20 > _buffer.Length) Flush();
            value.TryFormat(_buffer.AsSpan(_used), out int written, default, CultureInfo.InvariantCulture);
            _used += written;
        }

        public void Float(float value)
        {
            if (!float.IsFinite(value)) throw new ArgumentException($"rating {value} is not finite");
            if (_used + 32 > _buffer.Length) Flush();
            value.TryFormat(_buffer.AsSpan(_used), out int written, "R", CultureInfo.InvariantCulture);
            _used += written;
        }

        public void Flush()
        {
            stream.Write(_buffer, 0, _used);
            _used = 0;
        }
    }

    private static string DomainName(ItemDomain domain) => domain switch
    {
        ItemDomain.Movies => "movies",
        ItemDomain.Books => "books",
        _ => throw new ArgumentOutOfRangeException(nameof(domain), domain, "unknown item domain"),
    };

    private static void WriteManifest(string path, SampleSet samples)
    {
        var d = samples.Dataset;
        var o = samples.Options;
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("format", Format);
            w.WriteNumber("version", Version);
            w.WriteString("name", d.Name);
            w.WriteString("kind", DatasetReader.NameOf(d.Kind));
            w.WriteString("domain", DomainName(d.Domain));
            w.WriteBoolean("has_timestamps", d.HasTimestamps);
            w.WriteBoolean("has_profiles", d.Profiles is not null);
            w.WriteNumber("label_threshold", d.LabelThreshold);
            w.WriteNumber("skipped_lines", d.SkippedLines);
            w.WriteNumber("filtered_ratings", d.FilteredRatings);
            w.WriteString("protocol", d.HasTimestamps ? "time-ordered" : "hold-out");
            w.WriteStartObject("options");
            w.WriteNumber("min_history", o.MinHistory);
            w.WriteNumber("train_fraction", o.TrainFraction);
            w.WriteNumber("valid_fraction", o.ValidFraction);
            w.WriteNumber("seed", o.Seed);
            w.WriteNumber("limit", o.Limit);
            w.WriteBoolean("shuffle_hold_out", o.ShuffleHoldOut);
            w.WriteEndObject();
            w.WriteStartObject("counts");
            w.WriteNumber("items", d.Items.Count);
            w.WriteNumber("users", d.UserKeys.Count);
            w.WriteNumber("ratings", d.Ratings.Length);
            w.WriteNumber("samples", samples.Samples.Count);
            foreach (var split in Enum.GetValues<SampleSplit>()) w.WriteNumber(SampleSet.NameOf(split), samples.CountOf(split));
            w.WriteEndObject();
            w.WriteEndObject();
        }
        stream.WriteByte((byte)'\n');
        stream.Flush(flushToDisk: true);
    }

    // ---- reading -----------------------------------------------------------------------------------------------------

    /// <summary>Reads a folder written by <see cref="Save"/>, checking every file against the manifest and each other.</summary>
    /// <param name="directory">The folder.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="IOException">The path is a file, or one of the five files is a folder.</exception>
    /// <exception cref="FileNotFoundException">One of the five files is missing (the message names it).</exception>
    /// <exception cref="RecordException">A malformed file; the message starts <c>FILE:LINE:</c> (or <c>FILE:</c> for
    /// whole-file problems such as a missing line) and says what was expected and what was found.</exception>
    /// <param name="progress">Receives <c>("load", files read, 5)</c> after the manifest and after each data file.</param>
    /// <param name="cancellationToken">Checked before each file.</param>
    public static SampleSet Load(string directory, IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        InputPaths.RequireDirectory(directory, "prepared dataset folder");
        string Need(string file)
        {
            string path = Path.Combine(directory, file);
            if (Directory.Exists(path)) throw new IOException($"'{directory}' is not a valid prepared dataset: {file} is a folder, not a file");
            if (!File.Exists(path)) throw new FileNotFoundException($"'{directory}' is not a complete prepared dataset: {file} is missing", path);
            return path;
        }
        const int Files = 5;
        cancellationToken.ThrowIfCancellationRequested();
        var m = ReadManifest(Need(ManifestFileName));
        string itemsPath = Need(ItemsFileName), usersPath = Need(UsersFileName), timelinesPath = Need(TimelinesFileName), samplesPath = Need(SamplesFileName);
        progress?.Report(new WorkProgress("load", 1, Files));

        cancellationToken.ThrowIfCancellationRequested();
        var items = ReadItems(itemsPath, m.Items);
        progress?.Report(new WorkProgress("load", 2, Files));
        cancellationToken.ThrowIfCancellationRequested();
        var (userKeys, profiles) = ReadUsers(usersPath, m.Users, m.HasProfiles);
        progress?.Report(new WorkProgress("load", 3, Files));
        cancellationToken.ThrowIfCancellationRequested();
        var (timelines, start, ratings) = ReadTimelines(timelinesPath, m.Users, m.Items, m.Ratings);
        progress?.Report(new WorkProgress("load", 4, Files));
        cancellationToken.ThrowIfCancellationRequested();

        RatingDataset dataset;
        try
        {
            dataset = new RatingDataset(m.Name, m.Kind, m.Domain, items, userKeys, profiles, ratings, m.HasTimestamps, m.LabelThreshold, m.SkippedLines)
            {
                FilteredRatings = m.FilteredRatings,
            };
        }
        catch (ArgumentException e)
        {
            throw new RecordException(Path.Combine(directory, ManifestFileName), null, $"the files do not make a valid dataset: {e.Message}", e);
        }
        var samples = ReadSamples(samplesPath, dataset, timelines, start, m);
        SampleSet set;
        try
        {
            set = new SampleSet(dataset, m.Options, timelines, start, samples);
        }
        catch (ArgumentException e)
        {
            throw new RecordException(samplesPath, null, $"{e.Message}", e);
        }
        progress?.Report(new WorkProgress("load", Files, Files));
        return set;
    }

    private sealed record Manifest(string Name, DatasetKind Kind, ItemDomain Domain, bool HasTimestamps, bool HasProfiles, float LabelThreshold,
        int SkippedLines, int FilteredRatings, SampleOptions Options, int Items, int Users, int Ratings, int Samples, int[] SplitCounts);

    /// <summary>The largest manifest read (it is a few hundred bytes; anything this big is not one).</summary>
    private const int ManifestMaxBytes = 1 << 20;

    private static Manifest ReadManifest(string path)
    {
        var at = new Where(path, null);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(InputPaths.ReadAllBytes(path, "manifest", ManifestMaxBytes)); }
        catch (JsonException e) { throw new RecordException(path, (e.LineNumber ?? 0) + 1, Runtime.JsonLines.Describe(e), e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new RecordException(path, 1, $"expected a JSON object, got {Runtime.JsonLines.Kind(root)}");
            string format = String(root, "format", at);
            if (format != Format) throw at.Fail($"\"format\" must be \"{Format}\", got \"{format}\"");
            int version = Int(root, "version", at);
            if (version != Version) throw at.Fail($"\"version\" {version} is not supported (this build reads version {Version})");
            string name = String(root, "name", at);
            if (name.Length == 0) throw at.Fail($"\"name\" is empty");
            string kindName = String(root, "kind", at);
            DatasetKind kind;
            if (kindName == "custom") kind = DatasetKind.Custom;
            else
            {
                int k = DatasetReader.Names.ToList().IndexOf(kindName);
                if (k < 0) throw at.Fail($"\"kind\" must be one of {string.Join(", ", DatasetReader.Names)} or custom, got \"{kindName}\"");
                kind = (DatasetKind)k;
            }
            string domainName = String(root, "domain", at);
            var domain = domainName switch
            {
                "movies" => ItemDomain.Movies,
                "books" => ItemDomain.Books,
                _ => throw at.Fail($"\"domain\" must be \"movies\" or \"books\", got \"{domainName}\""),
            };
            bool hasTimestamps = Bool(root, "has_timestamps", at), hasProfiles = Bool(root, "has_profiles", at);
            var threshold = Property(root, "label_threshold", at);
            if (threshold.ValueKind != JsonValueKind.Number || !threshold.TryGetSingle(out float labelThreshold) || !float.IsFinite(labelThreshold))
                throw at.Fail($"\"label_threshold\" must be a finite number, got {threshold.GetRawText()}");
            int skipped = NonNegative(root, "skipped_lines", at);
            // Optional: folders written before the field existed have none.
            int filtered = root.TryGetProperty("filtered_ratings", out _) ? NonNegative(root, "filtered_ratings", at) : 0;

            var o = Property(root, "options", at);
            if (o.ValueKind != JsonValueKind.Object) throw at.Fail($"\"options\" must be an object, got {o.ValueKind}");
            var options = new SampleOptions
            {
                MinHistory = Int(o, "min_history", at),
                TrainFraction = Double(o, "train_fraction", at),
                ValidFraction = Double(o, "valid_fraction", at),
                Seed = Int(o, "seed", at),
                Limit = Int(o, "limit", at),
                ShuffleHoldOut = Bool(o, "shuffle_hold_out", at),
            };
            try { ReLLaSamples.Validate(options); }
            catch (ArgumentException e) { throw at.Fail($"\"options\": {e.Message}", e); }

            var c = Property(root, "counts", at);
            if (c.ValueKind != JsonValueKind.Object) throw at.Fail($"\"counts\" must be an object, got {c.ValueKind}");
            var splits = new int[3];
            foreach (var split in Enum.GetValues<SampleSplit>()) splits[(int)split] = NonNegative(c, SampleSet.NameOf(split), at);
            int sampleCount = NonNegative(c, "samples", at);
            if (splits.Sum() != sampleCount)
                throw at.Fail($"\"counts\": train + valid + test = {splits.Sum()} but samples = {sampleCount}");
            return new Manifest(name, kind, domain, hasTimestamps, hasProfiles, labelThreshold, skipped, filtered, options,
                NonNegative(c, "items", at), NonNegative(c, "users", at), NonNegative(c, "ratings", at), sampleCount, splits);
        }
    }

    private static JsonElement Property(JsonElement obj, string name, Where where) =>
        obj.TryGetProperty(name, out var value) ? value : throw where.Fail($"\"{name}\" is missing");

    private static string String(JsonElement obj, string name, Where where)
    {
        var v = Property(obj, name, where);
        return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw where.Fail($"\"{name}\" must be a string, got {v.GetRawText()}");
    }

    private static string? NullableString(JsonElement obj, string name, Where where, bool required)
    {
        if (!obj.TryGetProperty(name, out var v))
            return required ? throw where.Fail($"\"{name}\" is missing") : null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Null => null,
            _ => throw where.Fail($"\"{name}\" must be a string or null, got {v.GetRawText()}"),
        };
    }

    private static int Int(JsonElement obj, string name, Where where)
    {
        var v = Property(obj, name, where);
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int x) ? x : throw where.Fail($"\"{name}\" must be a 32-bit integer, got {v.GetRawText()}");
    }

    private static int NonNegative(JsonElement obj, string name, Where where)
    {
        int x = Int(obj, name, where);
        return x >= 0 ? x : throw where.Fail($"\"{name}\" must be >= 0, got {x}");
    }

    private static double Double(JsonElement obj, string name, Where where)
    {
        var v = Property(obj, name, where);
        return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double x) ? x : throw where.Fail($"\"{name}\" must be a number, got {v.GetRawText()}");
    }

    private static bool Bool(JsonElement obj, string name, Where where)
    {
        var v = Property(obj, name, where);
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw where.Fail($"\"{name}\" must be true or false, got {v.GetRawText()}"),
        };
    }

    private static void CheckRowId(JsonElement obj, string name, int expected, Where where)
    {
        int id = Int(obj, name, where);
        if (id != expected) throw where.Fail($"\"{name}\" must be {expected} (rows are in order, one per line), got {id}");
    }

    private static void CheckCount(string path, string what, int found, int expected)
    {
        if (found != expected) throw new RecordException(path, null, $"{found} {what} but the manifest says {expected}");
    }

    private static List<Item> ReadItems(string path, int expected)
    {
        var items = new List<Item>(expected);
        foreach (var (number, o) in Runtime.JsonLines.Objects(path, "items file"))
        {
            var where = new Where(path, number);
            if (items.Count == expected) throw where.Fail($"more items than the manifest's {expected}");
            CheckRowId(o, "id", items.Count, where);
            var genres = Property(o, "genres", where);
            if (genres.ValueKind != JsonValueKind.Array) throw where.Fail($"\"genres\" must be an array of strings, got {genres.GetRawText()}");
            var list = new List<string>(genres.GetArrayLength());
            foreach (var g in genres.EnumerateArray())
                list.Add(g.ValueKind == JsonValueKind.String ? g.GetString()! : throw where.Fail($"\"genres\"[{list.Count}] must be a string, got {g.GetRawText()}"));
            String(o, "text", where);
            items.Add(new Item(String(o, "key", where), String(o, "title", where), list, NullableString(o, "author", where, false),
                NullableString(o, "year", where, false), NullableString(o, "publisher", where, false), NullableString(o, "isbn", where, false)));
        }
        CheckCount(path, "items", items.Count, expected);
        return items;
    }

    private static (List<string> Keys, List<UserProfile>? Profiles) ReadUsers(string path, int expected, bool hasProfiles)
    {
        var keys = new List<string>(expected);
        var profiles = hasProfiles ? new List<UserProfile>(expected) : null;
        foreach (var (number, o) in Runtime.JsonLines.Objects(path, "users file"))
        {
            var where = new Where(path, number);
            if (keys.Count == expected) throw where.Fail($"more users than the manifest's {expected}");
            CheckRowId(o, "id", keys.Count, where);
            keys.Add(String(o, "key", where));
            profiles?.Add(new UserProfile(NullableString(o, "gender", where, true), NullableString(o, "age", where, true),
                NullableString(o, "job", where, true), NullableString(o, "location", where, true)));
        }
        CheckCount(path, "users", keys.Count, expected);
        return (keys, profiles);
    }

    private static (Rating[] Timelines, int[] Start, Rating[] Ratings) ReadTimelines(string path, int users, int items, int ratingCount)
    {
        var timelines = new Rating[ratingCount];
        var ratings = new Rating[ratingCount];
        var seen = new bool[ratingCount];
        var start = new int[users + 1];
        int u = 0, events = 0;
        var itemList = new List<long>();
        var valueList = new List<float>();
        var timeList = new List<long>();
        var rowList = new List<long>();
        using var lines = Runtime.LineReader.Open(path, "timelines file");
        while (Runtime.JsonLines.TryReadObjectLine(lines, out var line))
        {
            var where = new Where(path, lines.LineNumber);
            if (u == users) throw where.Fail($"more timelines than the manifest's {users} users");
            long user = -1;
            bool hasItems = false, hasRatings = false, hasTimes = false, hasRows = false;
            var reader = ObjectReader(line, where);
            while (NextProperty(ref reader, where) is { } name)
            {
                switch (name)
                {
                    case "user": user = ReadInteger(ref reader, name, where); break;
                    case "items": ReadIntegers(ref reader, name, where, itemList); hasItems = true; break;
                    case "ratings": ReadNumbers(ref reader, name, where, valueList); hasRatings = true; break;
                    case "timestamps": ReadIntegers(ref reader, name, where, timeList); hasTimes = true; break;
                    case "rows": ReadIntegers(ref reader, name, where, rowList); hasRows = true; break;
                    default: reader.Skip(); break;
                }
            }
            if (user < 0) throw where.Fail($"\"user\" is missing");
            if (user != u) throw where.Fail($"\"user\" must be {u} (one timeline per user, in user order), got {user}");
            if (!hasItems || !hasRatings || !hasTimes || !hasRows)
                throw where.Fail($"\"{(!hasItems ? "items" : !hasRatings ? "ratings" : !hasTimes ? "timestamps" : "rows")}\" is missing");
            int n = itemList.Count;
            if (valueList.Count != n || timeList.Count != n || rowList.Count != n)
                throw where.Fail($"\"items\", \"ratings\", \"timestamps\" and \"rows\" must have the same length, got {n}, {valueList.Count}, {timeList.Count}, {rowList.Count}");
            if (events + n > ratingCount) throw where.Fail($"more timeline events than the manifest's {ratingCount} ratings");
            for (int e = 0; e < n; e++)
            {
                if ((ulong)itemList[e] >= (ulong)items) throw where.Fail($"\"items\"[{e}] = {itemList[e]} is outside [0, {items})");
                float value = valueList[e];
                if (!float.IsFinite(value)) throw where.Fail($"\"ratings\"[{e}] = {valueList[e]} is not a finite float");
                long row = rowList[e];
                if ((ulong)row >= (ulong)ratingCount) throw where.Fail($"\"rows\"[{e}] = {row} is outside [0, {ratingCount})");
                if (seen[row]) throw where.Fail($"\"rows\"[{e}] = {row} appears twice (every rating belongs to one timeline event)");
                seen[row] = true;
                var r = new Rating(u, (int)itemList[e], value, timeList[e]);
                timelines[events + e] = r;
                ratings[row] = r;
            }
            events += n;
            start[++u] = events;
        }
        if (u != users) throw new RecordException(path, null, $"{u} timelines but the manifest says {users} users");
        if (events != ratingCount) throw new RecordException(path, null, $"{events} timeline events but the manifest says {ratingCount} ratings");
        return (timelines, start, ratings);
    }

    private static ReLLaSample[] ReadSamples(string path, RatingDataset dataset, Rating[] timelines, int[] start, Manifest m)
    {
        var samples = new ReLLaSample[m.Samples];
        var counts = new int[3];
        int s = 0;
        using var lines = Runtime.LineReader.Open(path, "samples file");
        while (Runtime.JsonLines.TryReadObjectLine(lines, out var line))
        {
            var where = new Where(path, lines.LineNumber);
            if (s == m.Samples) throw where.Fail($"more samples than the manifest's {m.Samples}");
            long id = -1, user = -1, item = -1, label = -1, history = -1, timestamp = 0;
            float rating = float.NaN;
            bool hasTime = false;
            string? splitName = null;
            var reader = ObjectReader(line, where);
            while (NextProperty(ref reader, where) is { } name)
            {
                switch (name)
                {
                    case "id": id = ReadInteger(ref reader, name, where); break;
                    case "split":
                        if (reader.TokenType != JsonTokenType.String) throw where.Fail($"\"split\" must be \"train\", \"valid\" or \"test\", got {Raw(ref reader)}");
                        try { splitName = reader.GetString(); }
                        catch (InvalidOperationException e) { throw where.Fail($"\"split\" is not valid UTF-8 ({e.Message})", e); }
                        break;
                    case "user": user = ReadInteger(ref reader, name, where); break;
                    case "item": item = ReadInteger(ref reader, name, where); break;
                    case "rating":
                        if (reader.TokenType != JsonTokenType.Number || !reader.TryGetSingle(out rating)) throw where.Fail($"\"rating\" must be a number, got {Raw(ref reader)}");
                        break;
                    case "label": label = ReadInteger(ref reader, name, where); break;
                    case "timestamp": timestamp = ReadInteger(ref reader, name, where); hasTime = true; break;
                    case "history": history = ReadInteger(ref reader, name, where); break;
                    default: reader.Skip(); break;
                }
            }
            Present(id, "id", where);
            Present(user, "user", where);
            Present(item, "item", where);
            Present(label, "label", where);
            Present(history, "history", where);
            if (splitName is null) throw where.Fail($"\"split\" is missing");
            if (float.IsNaN(rating)) throw where.Fail($"\"rating\" is missing");
            if (!hasTime) throw where.Fail($"\"timestamp\" is missing");
            if (id != s) throw where.Fail($"\"id\" must be {s} (samples are in global order, one per line), got {id}");
            var split = splitName switch
            {
                "train" => SampleSplit.Train,
                "valid" => SampleSplit.Valid,
                "test" => SampleSplit.Test,
                _ => throw where.Fail($"\"split\" must be \"train\", \"valid\" or \"test\", got \"{splitName}\""),
            };
            if (user >= dataset.UserKeys.Count) throw where.Fail($"\"user\" {user} is outside [0, {dataset.UserKeys.Count})");
            if (item >= dataset.Items.Count) throw where.Fail($"\"item\" {item} is outside [0, {dataset.Items.Count})");
            if (label > 1) throw where.Fail($"\"label\" must be 0 or 1, got {label}");
            int u = (int)user, length = start[u + 1] - start[u];
            if (history >= length)
                throw where.Fail($"\"history\" {history} leaves no target in user {u}'s timeline of {length} events");
            var target = timelines[start[u] + (int)history];
            float value = rating;
            if (target.Item != item || target.Value != value || target.Timestamp != timestamp)
                throw where.Fail($"the sample (item {item}, rating {Text(value)}, timestamp {timestamp}) is not event {history} of user {u}'s timeline " +
                    $"(item {target.Item}, rating {Text(target.Value)}, timestamp {target.Timestamp})");
            if ((label == 1) != dataset.IsPositive(value))
                throw where.Fail($"\"label\" {label} does not match rating {Text(value)} (positive when > {Text(dataset.LabelThreshold)})");
            if (history < m.Options.MinHistory)
                throw where.Fail($"\"history\" {history} is below the manifest's min_history {m.Options.MinHistory}");
            if (s > 0 && split < samples[s - 1].Split)
                throw where.Fail($"split \"{splitName}\" after \"{SampleSet.NameOf(samples[s - 1].Split)}\" (splits are contiguous: train, valid, test)");
            counts[(int)split]++;
            samples[s] = new ReLLaSample(s, u, (int)item, value, label == 1, timestamp, (int)history, split);
            s++;
        }
        CheckCount(path, "samples", s, m.Samples);
        foreach (var split in Enum.GetValues<SampleSplit>())
            if (counts[(int)split] != m.SplitCounts[(int)split])
                throw new RecordException(path, null, $"{counts[(int)split]} {SampleSet.NameOf(split)} samples but the manifest says {m.SplitCounts[(int)split]}");
        return samples;
    }

    private static void Present(long value, string field, Where where)
    {
        if (value < 0) throw where.Fail($"\"{field}\" is missing or negative");
    }

    private static string Text(float value) => value.ToString(CultureInfo.InvariantCulture);

    // ---- a small strict reader for the two large files (no DOM per line) ------------------------------------------

    /// <summary>A file and, for a record, its line: where an error is; formatted only when one is thrown.</summary>
    private readonly record struct Where(string Path, long? Line)
    {
        /// <summary>The typed error <c>FILE:LINE: reason</c> (or <c>FILE: reason</c>).</summary>
        public RecordException Fail(string reason, Exception? inner = null) => new(Path, Line, reason, inner);
    }

    private static Utf8JsonReader ObjectReader(ReadOnlySpan<byte> line, Where where)
    {
        var reader = new Utf8JsonReader(line);
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw where.Fail($"expected a JSON object");
        }
        catch (JsonException e) { throw where.Fail($"not valid JSON ({e.Message})", e); }
        return reader;
    }

    /// <summary>Moves to the next property's value and returns its name; null at the end of the object (and checks that
    /// nothing follows it).</summary>
    private static string? NextProperty(ref Utf8JsonReader reader, Where where)
    {
        try
        {
            if (!reader.Read()) throw where.Fail($"the JSON object is not closed");
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                if (reader.Read()) throw where.Fail($"text after the JSON object");
                return null;
            }
            string name = reader.ValueIsEscaped || reader.HasValueSequence ? reader.GetString()! : KnownName(reader.ValueSpan);
            if (!reader.Read()) throw where.Fail($"\"{name}\" has no value");
            return name;
        }
        catch (JsonException e) { throw where.Fail($"not valid JSON ({e.Message})", e); }
        catch (InvalidOperationException e) { throw where.Fail($"a property name is not valid UTF-8 ({e.Message})", e); }
    }

    private static readonly string[] KnownNames = ["id", "split", "user", "item", "rating", "label", "timestamp", "history", "items", "ratings", "timestamps", "rows"];

    /// <summary>The property names of the two large files without allocating a string per property.</summary>
    private static string KnownName(ReadOnlySpan<byte> utf8)
    {
        foreach (string known in KnownNames)
            if (utf8.Length == known.Length && Ascii.Equals(utf8, known)) return known;
        return Encoding.UTF8.GetString(utf8);
    }

    private static string Raw(ref Utf8JsonReader reader)
    {
        if (reader.TokenType is JsonTokenType.StartArray or JsonTokenType.StartObject) return reader.TokenType == JsonTokenType.StartArray ? "an array" : "an object";
        if (reader.TokenType == JsonTokenType.String) return JsonSerializer.Serialize(reader.GetString());
        return Encoding.UTF8.GetString(reader.HasValueSequence ? reader.ValueSequence.ToArray() : reader.ValueSpan);
    }

    private static long ReadInteger(ref Utf8JsonReader reader, string name, Where where) =>
        reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out long v) ? v
            : throw where.Fail($"\"{name}\" must be an integer, got {Raw(ref reader)}");

    private static void ReadIntegers(ref Utf8JsonReader reader, string name, Where where, List<long> into)
    {
        into.Clear();
        if (reader.TokenType != JsonTokenType.StartArray) throw where.Fail($"\"{name}\" must be an array of integers, got {Raw(ref reader)}");
        try
        {
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v))
                    throw where.Fail($"\"{name}\"[{into.Count}] must be an integer, got {Raw(ref reader)}");
                into.Add(v);
            }
        }
        catch (JsonException e) { throw where.Fail($"not valid JSON ({e.Message})", e); }
    }

    private static void ReadNumbers(ref Utf8JsonReader reader, string name, Where where, List<float> into)
    {
        into.Clear();
        if (reader.TokenType != JsonTokenType.StartArray) throw where.Fail($"\"{name}\" must be an array of numbers, got {Raw(ref reader)}");
        try
        {
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                // Read as float directly (not via double), so the shortest round-trip text gives back the exact float.
                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetSingle(out float v))
                    throw where.Fail($"\"{name}\"[{into.Count}] must be a number, got {Raw(ref reader)}");
                into.Add(v);
            }
        }
        catch (JsonException e) { throw where.Fail($"not valid JSON ({e.Message})", e); }
    }
}
