using System.Globalization;
using System.Text;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// Reads the public rating datasets (SPEC §1) from their original files into a <see cref="RatingDataset"/>. Every
/// malformed line is a <see cref="RecordException"/> whose message starts <c>FILE:LINE:</c>, unless
/// <see cref="DatasetReadOptions.SkipBadLines"/> asks to skip and count such lines. A missing file is a
/// <see cref="FileNotFoundException"/> that names it.
/// </summary>
public static class DatasetReader
{
    /// <summary>The command-line names, in <see cref="DatasetKind"/> order (without <see cref="DatasetKind.Custom"/>).</summary>
    public static IReadOnlyList<string> Names { get; } = ["movielens-100k", "movielens-1m", "movielens-25m", "bookcrossing", "goodreads"];

    /// <summary>The kind named <paramref name="name"/> (one of <see cref="Names"/>, case-insensitive).</summary>
    /// <exception cref="ArgumentException">An unknown name; the message lists the known ones.</exception>
    public static DatasetKind ParseKind(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        int i = Names.ToList().FindIndex(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
        if (i < 0) throw new ArgumentException($"unknown dataset '{name}'; expected one of {string.Join(", ", Names)}", nameof(name));
        return (DatasetKind)i;
    }

    /// <summary>The command-line name of <paramref name="kind"/>.</summary>
    public static string NameOf(DatasetKind kind) => kind == DatasetKind.Custom ? "custom" : Names[(int)kind];

    /// <summary>Reads the dataset <paramref name="kind"/> from the folder <paramref name="directory"/>.</summary>
    /// <param name="kind">Which dataset (not <see cref="DatasetKind.Custom"/>).</param>
    /// <param name="directory">The folder holding the dataset's files, as unpacked from its archive.</param>
    /// <param name="options">Bad-line handling; null for the strict default.</param>
    /// <param name="cancellationToken">Checked every 4096 lines of every file read. (No progress: the files' line counts
    /// are not known before they are read.)</param>
    /// <exception cref="OperationCanceledException">Cancelled (nothing is written; the partial read is dropped).</exception>
    public static RatingDataset Read(DatasetKind kind, string directory, DatasetReadOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(directory);
        InputPaths.RequireDirectory(directory, "dataset folder");
        options ??= new DatasetReadOptions();
        cancellationToken.ThrowIfCancellationRequested();
        // The readers are synchronous on this thread; the line sources (SourceLines, CsvRecordReader.Read) check the token.
        var outer = Cancellation;
        Cancellation = cancellationToken;
        try { return ReadKind(kind, directory, options); }
        finally { Cancellation = outer; }
    }

    /// <summary>Lines between two cancellation checks of <see cref="Read"/>.</summary>
    internal const int CancelCheckLines = 4096;

    /// <summary>The token of the <see cref="Read"/> running on this thread (none outside one).</summary>
    [ThreadStatic] internal static CancellationToken Cancellation;

    private static RatingDataset ReadKind(DatasetKind kind, string directory, DatasetReadOptions options)
    {
        return kind switch
        {
            DatasetKind.MovieLens100K => ReadMovieLens100K(directory, options),
            DatasetKind.MovieLens1M => MovieLensReaders.Read1M(directory, options),
            DatasetKind.MovieLens25M => MovieLensReaders.Read25M(directory, options),
            DatasetKind.BookCrossing => BookReaders.ReadBookCrossing(directory, options),
            DatasetKind.GoodReads => BookReaders.ReadGoodReads(directory, options),
            _ => throw new ArgumentException($"{kind} is not a dataset that can be read from files", nameof(kind)),
        };
    }

    // ---- MovieLens-100K ------------------------------------------------------------------------------------------

    /// <summary>The ML-100K genre names in flag order, used when <c>u.genre</c> is absent.</summary>
    internal static readonly string[] MovieLens100KGenres =
    [
        "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
        "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    ];

    private static RatingDataset ReadMovieLens100K(string directory, DatasetReadOptions options)
    {
        var bad = new BadLines(options);
        string[] genres = MovieLens100KGenres;
        string genrePath = Path.Combine(directory, "u.genre");
        if (File.Exists(genrePath))
        {
            var list = new List<string>();
            foreach (var (line, where) in SourceLines(genrePath, Encoding.Latin1))
            {
                var f = line.Split('|');
                if (f.Length != 2 || !int.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out int index) || index != list.Count)
                { bad.Report(where, $"expected 'name|{list.Count}', got '{line}'"); continue; }
                list.Add(f[0]);
            }
            genres = [.. list];
        }

        var items = new List<Item>();
        var itemRow = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (line, where) in SourceLines(Path.Combine(directory, "u.item"), Encoding.Latin1))
        {
            // movie id | title | release date | video release date | IMDb URL | one 0/1 flag per genre
            var f = line.Split('|');
            if (f.Length != 5 + genres.Length) { bad.Report(where, $"expected {5 + genres.Length} '|'-separated fields, got {f.Length}"); continue; }
            if (!IsId(f[0])) { bad.Report(where, $"movie id '{f[0]}' is not a positive integer"); continue; }
            var itemGenres = new List<string>();
            bool flagsOk = true;
            for (int g = 0; g < genres.Length; g++)
            {
                string flag = f[5 + g];
                if (flag == "1") itemGenres.Add(genres[g]);
                else if (flag != "0") { flagsOk = false; bad.Report(where, $"genre flag {g} ('{genres[g]}') is '{flag}', expected 0 or 1"); break; }
            }
            if (!flagsOk) continue;
            if (!itemRow.TryAdd(f[0], items.Count)) { bad.Report(where, $"movie id {f[0]} appears twice"); continue; }
            items.Add(new Item(f[0], f[1], itemGenres));
        }

        var userKeys = new List<string>();
        var profiles = new List<UserProfile>();
        var userRow = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (line, where) in SourceLines(Path.Combine(directory, "u.user"), Encoding.Latin1))
        {
            // user id | age | gender | occupation | zip code
            var f = line.Split('|');
            if (f.Length != 5) { bad.Report(where, $"expected 5 '|'-separated fields, got {f.Length}"); continue; }
            if (!IsId(f[0])) { bad.Report(where, $"user id '{f[0]}' is not a positive integer"); continue; }
            if (!int.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out _)) { bad.Report(where, $"age '{f[1]}' is not a whole number"); continue; }
            string? gender = f[2] switch { "M" => "male", "F" => "female", _ => null };
            if (gender is null) { bad.Report(where, $"gender '{f[2]}' is not M or F"); continue; }
            if (!userRow.TryAdd(f[0], userKeys.Count)) { bad.Report(where, $"user id {f[0]} appears twice"); continue; }
            userKeys.Add(f[0]);
            profiles.Add(new UserProfile(gender, f[1], f[3]));
        }

        var ratings = new List<Rating>(100_000);
        foreach (var (line, where) in SourceLines(Path.Combine(directory, "u.data"), Encoding.Latin1))
        {
            // user id \t item id \t rating \t timestamp
            var f = line.Split('\t');
            if (f.Length != 4) { bad.Report(where, $"expected 4 tab-separated fields, got {f.Length}"); continue; }
            if (!userRow.TryGetValue(f[0], out int u)) { bad.Report(where, $"user id '{f[0]}' is not in u.user"); continue; }
            if (!itemRow.TryGetValue(f[1], out int i)) { bad.Report(where, $"movie id '{f[1]}' is not in u.item"); continue; }
            if (!int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value is < 1 or > 5)
            { bad.Report(where, $"rating '{f[2]}' is not a whole number from 1 to 5"); continue; }
            if (!long.TryParse(f[3], NumberStyles.None, CultureInfo.InvariantCulture, out long time)) { bad.Report(where, $"timestamp '{f[3]}' is not a whole number"); continue; }
            ratings.Add(new Rating(u, i, value, time));
        }
        return new RatingDataset("movielens-100k", DatasetKind.MovieLens100K, ItemDomain.Movies, items, userKeys, profiles,
            [.. ratings], hasTimestamps: true, labelThreshold: 3, skippedLines: bad.Count);
    }

    // ---- shared helpers ------------------------------------------------------------------------------------------

    /// <summary>True for a non-empty run of ASCII digits (a source id).</summary>
    internal static bool IsId(string s) => s.Length > 0 && s.All(char.IsAsciiDigit);

    /// <summary>
    /// The lines of a text file with their <c>FILE:LINE</c> location (1-based, counting every line); empty and
    /// white-space-only lines are skipped. Read through the library's bounded <see cref="LineReader"/>: a line longer than
    /// 16 MiB is a <see cref="RecordException"/> naming the file and line. A missing file is a
    /// <see cref="FileNotFoundException"/> naming it, a folder an <see cref="IOException"/>.
    /// </summary>
    internal static IEnumerable<(string Line, SourceLocation Where)> SourceLines(string path, Encoding encoding)
    {
        InputPaths.RequireFile(path, "dataset file");
        return Iterate();

        IEnumerable<(string, SourceLocation)> Iterate()
        {
            using var reader = LineReader.Open(path, "dataset file");
            while (reader.TryReadLine(out var bytes))
            {
                if (reader.LineNumber % CancelCheckLines == 0) Cancellation.ThrowIfCancellationRequested();
                string line = encoding.GetString(bytes.Span);
                if (string.IsNullOrWhiteSpace(line)) continue;
                yield return (line, new SourceLocation(path, reader.LineNumber));
            }
        }
    }
}

/// <summary>Either throws at the first malformed line or counts and reports it, per <see cref="DatasetReadOptions"/>.</summary>
internal sealed class BadLines(DatasetReadOptions options)
{
    /// <summary>Lines skipped so far.</summary>
    public int Count { get; private set; }

    /// <summary>A malformed line at <paramref name="where"/>: <paramref name="reason"/> says what is wrong.</summary>
    /// <exception cref="RecordException">Unless skipping was asked for: <c>FILE:LINE: reason</c>.</exception>
    public void Report(SourceLocation where, string reason)
    {
        if (!options.SkipBadLines) throw new RecordException(where.File, where.Line, reason);
        Count++;
        options.SkippedExamples?.Invoke($"{where}: {reason}");
    }
}

/// <summary>A line of a dataset file; prints as <c>FILE:LINE</c>.</summary>
/// <param name="File">The file.</param>
/// <param name="Line">1-based line number.</param>
internal readonly record struct SourceLocation(string File, long Line)
{
    /// <inheritdoc/>
    public override string ToString() => $"{File}:{Line}";
}
