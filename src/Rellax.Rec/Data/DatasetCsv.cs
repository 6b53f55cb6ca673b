using System.Globalization;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// Source ids (as text) to dense 0-based rows in first-added order, looked up by span so that reading a rating does not
/// allocate a string for an id already known. Canonical decimal ids (ASCII digits, no leading zero, below
/// <see cref="NumericLimit"/>: every MovieLens, goodbooks and Book-Crossing user id) go through a direct array indexed
/// by their value, 4 bytes per id up to the largest one; other keys (ISBNs, ids with leading zeros) through a
/// dictionary. The two never hold the same text, so the mapping from text to row stays one-to-one.
/// </summary>
internal sealed class KeyTable
{
    /// <summary>Ids at or above this value use the dictionary (caps the array at 64 MiB).</summary>
    internal const int NumericLimit = 1 << 24;

    private readonly Dictionary<string, int> _rows;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private int[] _byNumber = []; // row + 1 per numeric id; 0 = absent

    /// <summary>Creates an empty table.</summary>
    public KeyTable()
    {
        _rows = new Dictionary<string, int>(StringComparer.Ordinal);
        _lookup = _rows.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>The keys in row order.</summary>
    public List<string> Keys { get; } = [];

    /// <summary>The number of keys.</summary>
    public int Count => Keys.Count;

    /// <summary>The value of a canonical decimal id below <see cref="NumericLimit"/>, or -1.</summary>
    private static int Numeric(ReadOnlySpan<char> key)
    {
        if (key.Length is 0 or > 8 || key[0] == '0') return -1; // 8 digits < 10^8; the limit check follows
        int v = 0;
        foreach (char c in key)
        {
            uint d = (uint)(c - '0');
            if (d > 9) return -1;
            v = v * 10 + (int)d;
        }
        return v < NumericLimit ? v : -1;
    }

    /// <summary>The row of <paramref name="key"/>, if present.</summary>
    public bool TryGet(ReadOnlySpan<char> key, out int row)
    {
        int n = Numeric(key);
        if (n < 0) return _lookup.TryGetValue(key, out row);
        row = (uint)n < (uint)_byNumber.Length ? _byNumber[n] - 1 : -1;
        return row >= 0;
    }

    /// <summary>Adds <paramref name="key"/> as the next row; false (and nothing added) when it is already present.</summary>
    public bool TryAdd(string key)
    {
        if (TryGet(key, out _)) return false;
        Add(key, Numeric(key));
        return true;
    }

    /// <summary>The row of <paramref name="key"/>, adding it as the next row when new.</summary>
    public int GetOrAdd(ReadOnlySpan<char> key)
    {
        if (TryGet(key, out int row)) return row;
        return Add(new string(key), Numeric(key));
    }

    private int Add(string key, int numeric)
    {
        int row = Keys.Count;
        if (numeric < 0) _rows.Add(key, row);
        else
        {
            if (numeric >= _byNumber.Length) Array.Resize(ref _byNumber, (int)Math.Min(NumericLimit, Math.Max(numeric + 1L, _byNumber.Length * 2L)));
            _byNumber[numeric] = row + 1;
        }
        Keys.Add(key);
        return row;
    }
}

/// <summary>Helpers shared by the CSV-based readers (ML-25M, Book-Crossing, goodbooks-10k).</summary>
internal static class DatasetCsv
{
    /// <summary>True for a non-empty run of ASCII digits (a source id).</summary>
    public static bool IsId(ReadOnlySpan<char> s) => s.Length > 0 && !s.ContainsAnyExceptInRange('0', '9');

    /// <summary>
    /// Reads the header record and returns, for each of <paramref name="required"/>, its column index (names compared
    /// exactly). A missing or malformed header, or a missing column, is a <see cref="RecordException"/>
    /// <c>FILE:LINE: ...</c> that shows the expected and the actual header; it is never skipped, since no line of the
    /// file can be read without it.
    /// </summary>
    public static int[] ReadHeader(CsvRecordReader csv, params string[] required)
    {
        string expected = string.Join(csv.Separator, required);
        if (!csv.Read()) throw new RecordException(csv.Path, 1, $"the file is empty; expected a header with the columns {expected}");
        if (csv.Error is not null) throw new RecordException(csv.Path, csv.Line, $"header: {csv.Error}");
        var names = new string[csv.FieldCount];
        for (int i = 0; i < names.Length; i++) names[i] = csv.GetString(i);
        var columns = new int[required.Length];
        for (int c = 0; c < required.Length; c++)
        {
            columns[c] = Array.IndexOf(names, required[c]);
            if (columns[c] < 0)
                throw new RecordException(csv.Path, csv.Line, $"header has no column '{required[c]}': expected the columns {expected}, got {string.Join(csv.Separator, names)}");
            if (Array.IndexOf(names, required[c], columns[c] + 1) >= 0)
                throw new RecordException(csv.Path, csv.Line, $"header names the column '{required[c]}' twice: {string.Join(csv.Separator, names)}");
        }
        return columns;
    }

    /// <summary>
    /// An upper bound on the number of records after the header: the file's line count minus one (line breaks counted
    /// in 1 MiB blocks with a vectorised search, so a 650 MB file costs a fraction of a second from the page cache).
    /// </summary>
    public static int RecordCapacity(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var block = new byte[1 << 20];
        long lines = 0;
        byte last = (byte)'\n';
        int n;
        while ((n = stream.Read(block, 0, block.Length)) > 0)
        {
            lines += block.AsSpan(0, n).Count((byte)'\n');
            last = block[n - 1];
        }
        if (last != (byte)'\n') lines++;
        return (int)Math.Clamp(lines - 1, 0, Array.MaxLength);
    }

    /// <summary>Parses a whole number with ASCII digits only (no sign, no spaces).</summary>
    public static bool TryParseInt(ReadOnlySpan<char> s, out int value) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out value);

    /// <summary>Parses a non-negative whole number with ASCII digits only (a Unix time in seconds); a hand loop for up to
    /// 18 digits (cannot overflow), the library beyond.</summary>
    public static bool TryParseLong(ReadOnlySpan<char> s, out long value)
    {
        if (s.Length is 0 or > 18) return long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        long v = 0;
        foreach (char c in s)
        {
            uint d = (uint)(c - '0');
            if (d > 9) { value = 0; return false; }
            v = v * 10 + d;
        }
        value = v;
        return true;
    }

    /// <summary>Shortens a field for an error message (at most 40 characters, then <c>...</c>).</summary>
    public static string Show(ReadOnlySpan<char> s) => s.Length <= 40 ? new string(s) : string.Concat(s[..40], "...");

    /// <summary>
    /// Reads the rating records of an open CSV file whose header has been read. Each record must have
    /// <paramref name="fieldCount"/> fields; the user id must be digits; the item must be in <paramref name="items"/>;
    /// the rating must fit <paramref name="scale"/>; the timestamp (when <paramref name="timeColumn"/> &gt;= 0) must be a
    /// whole number. Without a timestamp column, <see cref="Rating.Timestamp"/> is the record's 0-based position after
    /// the header (every record counts, also skipped and filtered ones, so it stays the file order).
    /// </summary>
    /// <param name="csv">The reader, positioned after the header.</param>
    /// <param name="capacity">An upper bound on the records (<see cref="RecordCapacity"/>); the array is allocated once
    /// with it and trimmed at the end only when fewer ratings were kept.</param>
    /// <param name="fieldCount">Fields per record (the header's).</param>
    /// <param name="userColumn">Column of the user id.</param>
    /// <param name="itemColumn">Column of the item id.</param>
    /// <param name="ratingColumn">Column of the rating.</param>
    /// <param name="timeColumn">Column of the Unix time in seconds, or -1 for file order.</param>
    /// <param name="users">Known users; with <paramref name="addUsers"/> new ids are added in first-seen order.</param>
    /// <param name="addUsers">Add unknown users (ML-25M, goodbooks) instead of rejecting them.</param>
    /// <param name="items">Known items.</param>
    /// <param name="scale">The allowed rating values.</param>
    /// <param name="bad">Where malformed records go.</param>
    /// <param name="usersFile">The file users come from, for messages.</param>
    /// <param name="itemsFile">The file items come from, for messages.</param>
    /// <param name="dropUnknown">Drop (and count in <paramref name="dropped"/>) ratings of unknown users or items instead
    /// of reporting them as malformed (Book-Crossing, following the reference notebook).</param>
    /// <param name="dropped">Ratings dropped by <paramref name="dropUnknown"/>.</param>
    public static Rating[] ReadRatings(CsvRecordReader csv, int capacity, int fieldCount, int userColumn, int itemColumn, int ratingColumn,
        int timeColumn, KeyTable users, bool addUsers, KeyTable items, RatingScale scale, BadLines bad, string usersFile, string itemsFile,
        bool dropUnknown, out int dropped)
    {
        var ratings = new Rating[capacity];
        int n = 0;
        long record = -1;
        dropped = 0;
        while (csv.Read())
        {
            record++;
            if (csv.Error is not null) { bad.Report(csv.Location, $"{csv.Error}"); continue; }
            if (csv.FieldCount != fieldCount) { bad.Report(csv.Location, $"expected {fieldCount} fields, got {csv.FieldCount}"); continue; }
            var userKey = csv[userColumn];
            if (!IsId(userKey)) { bad.Report(csv.Location, $"user id '{Show(userKey)}' is not a positive integer"); continue; }
            int user = -1;
            if (!addUsers && !users.TryGet(userKey, out user))
            {
                if (dropUnknown) { dropped++; continue; }
                bad.Report(csv.Location, $"user id '{Show(userKey)}' is not in {usersFile}");
                continue;
            }
            var itemKey = csv[itemColumn];
            if (!items.TryGet(itemKey, out int item))
            {
                if (dropUnknown) { dropped++; continue; }
                bad.Report(csv.Location, $"item id '{Show(itemKey)}' is not in {itemsFile}");
                continue;
            }
            var ratingText = csv[ratingColumn];
            if (!scale.TryParse(ratingText, out float value)) { bad.Report(csv.Location, $"rating '{Show(ratingText)}' is not {scale.Describe()}"); continue; }
            long time = record;
            if (timeColumn >= 0 && !TryParseLong(csv[timeColumn], out time))
            { bad.Report(csv.Location, $"timestamp '{Show(csv[timeColumn])}' is not a whole number of seconds"); continue; }
            if (addUsers) user = users.GetOrAdd(userKey);
            if (n == ratings.Length) Array.Resize(ref ratings, Math.Max(16, (int)Math.Min(Array.MaxLength, ratings.Length * 2L))); // only if the file grew
            ratings[n++] = new Rating(user, item, value, time);
        }
        if (n != ratings.Length) Array.Resize(ref ratings, n);
        return ratings;
    }
}

/// <summary>The rating values a dataset allows: whole numbers from <see cref="Min"/> to <see cref="Max"/>, or halves.</summary>
/// <param name="Min">The smallest value.</param>
/// <param name="Max">The largest value.</param>
/// <param name="HalfSteps">Whether multiples of 0.5 are allowed (ML-25M) rather than whole numbers only.</param>
internal readonly record struct RatingScale(float Min, float Max, bool HalfSteps = false)
{
    /// <summary>Parses <paramref name="s"/> (<c>4</c>; with half steps also <c>3.5</c>, <c>4.0</c>: digits, optionally a
    /// dot and digits) and checks the range and step.</summary>
    public bool TryParse(ReadOnlySpan<char> s, out float value)
    {
        if (!HalfSteps)
        {
            bool ok = DatasetCsv.TryParseInt(s, out int n) && n >= Min && n <= Max;
            value = n;
            return ok;
        }
        // digits [ '.' digits ]: 4, 4.0, 3.5, 3.50 (no sign, exponent or spaces); the value is exact for these
        value = 0;
        int dot = s.IndexOf('.');
        var whole = dot < 0 ? s : s[..dot];
        var fraction = dot < 0 ? default : s[(dot + 1)..];
        if (whole.Length is 0 or > 6 || (dot >= 0 && fraction.Length is 0 or > 6)) return false;
        if (!Digits(whole, out int w) || !Digits(fraction, out int f)) return false;
        double v = w + (double)f / PowersOfTen[fraction.Length];
        value = (float)v;
        return v * 2 == Math.Round(v * 2) && v >= Min && v <= Max;
    }

    private static readonly int[] PowersOfTen = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

    /// <summary>The value of at most 6 ASCII digits (0 for none).</summary>
    private static bool Digits(ReadOnlySpan<char> s, out int value)
    {
        value = 0;
        foreach (char c in s)
        {
            uint d = (uint)(c - '0');
            if (d > 9) return false;
            value = value * 10 + (int)d;
        }
        return true;
    }

    /// <summary>The allowed values in words, for messages.</summary>
    public string Describe() => HalfSteps
        ? string.Create(CultureInfo.InvariantCulture, $"a multiple of 0.5 from {Min:0.0} to {Max:0.0}")
        : string.Create(CultureInfo.InvariantCulture, $"a whole number from {Min} to {Max}");
}
