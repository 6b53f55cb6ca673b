using System.Globalization;
using System.Text;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>The Book-Crossing and goodbooks-10k readers behind <see cref="DatasetReader.Read"/>.</summary>
internal static class BookReaders
{
    /// <summary>Windows-1252, the encoding of the Book-Crossing files (from <see cref="CodePagesEncodingProvider"/>, which works
    /// under invariant globalization).</summary>
    internal static Encoding Cp1252 { get; } = CodePagesEncodingProvider.Instance.GetEncoding(1252)
        ?? throw new InvalidOperationException("code page 1252 is not available");

    // ---- Book-Crossing ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Reads Book-Crossing from <paramref name="directory"/>: <c>BX-Books.csv</c>, <c>BX-Users.csv</c> and
    /// <c>BX-Book-Ratings.csv</c>, <c>;</c>-separated, every field quoted except <c>NULL</c>, cp1252, each with a header
    /// whose column names are checked. What is kept follows the reference preprocessing (LaVieEnRose365/ReLLa,
    /// <c>data_preprocess/BookCrossing.ipynb</c>):
    /// <list type="bullet">
    /// <item>Books: ISBN, title, author, year, publisher (each with tabs trimmed at both ends); the image URLs are ignored. A book
    /// whose ISBN has a character other than an ASCII letter or digit is left out (the reference's ISBN check), and so
    /// are its ratings. A year that is not 4 characters long (e.g. <c>0</c>) becomes null, and an author or publisher
    /// <c>n/a</c> (any case) becomes null; the item sentence prints null as <c>unknown</c>, as the reference's text does.
    /// Titles keep <c>\"</c> and HTML entities such as <c>&amp;amp;</c> exactly as in the file, as the reference does,
    /// so prompts match prompts made by the reference code.</item>
    /// <item>Quotes: <c>\"</c> inside a quoted field does not end it, and a quote that is not followed by <c>;</c> or the
    /// end of the line is text (<see cref="CsvQuoting.Backslash"/>). The public file has a few books whose title ends in
    /// <c>\"</c> followed by the unquoted author (<c>"...Readers)\";James Buckley";"2000";...</c>): such a 7-field
    /// record whose title holds <c>\";</c> once is repaired into title and author (our choice; the reference has no
    /// rule for it).</item>
    /// <item>Users: a quoted location may span lines (the reference reads this file with a regular expression over the
    /// whole text, which allows it); books and ratings are read line by line, as the reference reads them.
    /// <see cref="UserProfile.Location"/> is the country taken from the location (<see cref="CountryOf"/>),
    /// <see cref="UserProfile.Age"/> the age bucket (<see cref="AgeBucket"/>), both <c>unknown</c> when missing, as the
    /// prompt prints them; gender and job are null.</item>
    /// <item>Ratings: the implicit rating 0 is kept (a negative sample, label = rating &gt;= 5); ratings of a user not in
    /// <c>BX-Users.csv</c> or of an ISBN not among the kept books are dropped, as in the reference, and counted in
    /// <see cref="RatingDataset.FilteredRatings"/>. There are no timestamps: <see cref="Rating.Timestamp"/> is the rating's
    /// 0-based record position in <c>BX-Book-Ratings.csv</c> (header excluded).</item>
    /// </list>
    /// Malformed lines (wrong field count, unterminated quote, non-numeric user id or age, rating outside 0-10, duplicate
    /// ISBN or user id, empty title) are reported per <see cref="DatasetReadOptions"/>.
    /// </summary>
    public static RatingDataset ReadBookCrossing(string directory, DatasetReadOptions options)
    {
        var bad = new BadLines(options);
        var items = new List<Item>();
        var itemRow = new KeyTable();
        using (var csv = Open(directory, "BX-Books.csv"))
        {
            int[] col = DatasetCsv.ReadHeader(csv, "ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher");
            int fields = csv.FieldCount;
            while (csv.Read())
            {
                if (csv.Error is not null) { bad.Report(csv.Location, $"{csv.Error}"); continue; }
                string isbn, title, author, year, publisher;
                if (csv.FieldCount == fields)
                {
                    isbn = csv.GetString(col[0]);
                    title = csv.GetString(col[1]);
                    author = csv.GetString(col[2]);
                    year = csv.GetString(col[3]);
                    publisher = csv.GetString(col[4]);
                }
                else if (csv.FieldCount == fields - 1 && fields == 8 && col.SequenceEqual([0, 1, 2, 3, 4]) && SplitTitleAuthor(csv[1], out title, out author))
                {
                    isbn = csv.GetString(0); // title and author ran together: "title\";author"
                    year = csv.GetString(2);
                    publisher = csv.GetString(3);
                }
                else { bad.Report(csv.Location, $"expected {fields} ';'-separated fields, got {csv.FieldCount}"); continue; }

                // the reference strips tabs from both ends of every field, then drops books whose ISBN is not letters and digits
                (isbn, title, author, year, publisher) = (isbn.Trim('\t'), title.Trim('\t'), author.Trim('\t'), year.Trim('\t'), publisher.Trim('\t'));
                if (isbn.AsSpan().ContainsAnyExcept(IsbnChars) || isbn.Length == 0) continue;
                if (title.Length == 0) { bad.Report(csv.Location, $"ISBN {isbn} has an empty title"); continue; }
                if (!itemRow.TryAdd(isbn)) { bad.Report(csv.Location, $"ISBN {isbn} appears twice"); continue; }
                items.Add(new Item(isbn, title, [], Author: NotApplicable(author), Year: year.Length == 4 ? year : null,
                    Publisher: NotApplicable(publisher), Isbn: isbn));
            }
        }

        var users = new KeyTable();
        var profiles = new List<UserProfile>();
        using (var csv = Open(directory, "BX-Users.csv", multiline: true))
        {
            int[] col = DatasetCsv.ReadHeader(csv, "User-ID", "Location", "Age");
            int fields = csv.FieldCount;
            while (csv.Read())
            {
                if (csv.Error is not null) { bad.Report(csv.Location, $"{csv.Error}"); continue; }
                if (csv.FieldCount != fields) { bad.Report(csv.Location, $"expected {fields} ';'-separated fields, got {csv.FieldCount}"); continue; }
                var id = csv[col[0]];
                if (!DatasetCsv.IsId(id)) { bad.Report(csv.Location, $"user id '{DatasetCsv.Show(id)}' is not a positive integer"); continue; }
                string? location = IsNull(csv, col[1]) ? null : csv.GetString(col[1]);
                int? age = null;
                if (!IsNull(csv, col[2]))
                {
                    if (!DatasetCsv.TryParseInt(csv[col[2]], out int a)) { bad.Report(csv.Location, $"age '{DatasetCsv.Show(csv[col[2]])}' is not a whole number or NULL"); continue; }
                    age = a;
                }
                string key = new(id);
                if (!users.TryAdd(key)) { bad.Report(csv.Location, $"user id {key} appears twice"); continue; }
                profiles.Add(new UserProfile(null, AgeBucket(age), null, location is null ? Unknown : CountryOf(location)));
            }
        }

        Rating[] ratings;
        int dropped;
        using (var csv = Open(directory, "BX-Book-Ratings.csv"))
        {
            int capacity = DatasetCsv.RecordCapacity(csv.Path);
            int[] col = DatasetCsv.ReadHeader(csv, "User-ID", "ISBN", "Book-Rating");
            ratings = DatasetCsv.ReadRatings(csv, capacity, csv.FieldCount, col[0], col[1], col[2], timeColumn: -1, users, addUsers: false, itemRow,
                new RatingScale(0, 10), bad, "BX-Users.csv", "BX-Books.csv", dropUnknown: true, out dropped);
        }
        return new RatingDataset("bookcrossing", DatasetKind.BookCrossing, ItemDomain.Books, items, users.Keys, profiles, ratings,
            hasTimestamps: false, labelThreshold: 4, skippedLines: bad.Count) { FilteredRatings = dropped };
    }

    private const string Unknown = "unknown";

    private static readonly System.Buffers.SearchValues<char> IsbnChars =
        System.Buffers.SearchValues.Create("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

    private static CsvRecordReader Open(string directory, string file, bool multiline = false) =>
        new(Path.Combine(directory, file), Cp1252, ';', CsvQuoting.Backslash, multiline);

    /// <summary>An unquoted <c>NULL</c> (MySQL's missing value).</summary>
    private static bool IsNull(CsvRecordReader csv, int column) => !csv.IsQuoted(column) && csv[column].SequenceEqual("NULL");

    /// <summary>The reference writes <c>unknown</c> for an author or publisher <c>n/a</c>; we use null, which the item sentence prints as <c>unknown</c>.</summary>
    private static string? NotApplicable(string s) => s.Equals("n/a", StringComparison.OrdinalIgnoreCase) ? null : s;

    /// <summary>Splits <c>title\";author</c> (one <c>\";</c>, non-empty parts) into title and author.</summary>
    private static bool SplitTitleAuthor(ReadOnlySpan<char> field, out string title, out string author)
    {
        const string Joint = "\\\";";
        int k = field.IndexOf(Joint);
        if (k <= 0 || field[(k + Joint.Length)..].Contains(Joint, StringComparison.Ordinal) || k + Joint.Length == field.Length)
        {
            title = author = "";
            return false;
        }
        title = new string(field[..k]);
        author = new string(field[(k + Joint.Length)..]);
        return true;
    }

    /// <summary>
    /// The age bucket the ReLLa Book-Crossing prompt prints (reference <c>convert_age_to_bucket</c> in
    /// <c>data_preprocess/BookCrossing.ipynb</c>): missing, below 5 or above 100 is <c>unknown</c>; then
    /// <c>under 18</c>, <c>18-24</c>, <c>25-29</c>, <c>30-34</c>, ..., <c>55-59</c> (5-year buckets), <c>60+</c>.
    /// </summary>
    internal static string AgeBucket(int? age)
    {
        if (age is not int a || a < 5 || a > 100) return Unknown;
        if (a < 18) return "under 18";
        if (a < 25) return "18-24";
        if (a >= 60) return "60+";
        int low = a / 5 * 5;
        return string.Create(CultureInfo.InvariantCulture, $"{low}-{low + 4}");
    }

    /// <summary>
    /// The country of a Book-Crossing location (<c>city, state, country</c>), following the reference
    /// <c>convert_location_to_country</c> (<c>data_preprocess/BookCrossing.ipynb</c>) step by step: the text after the
    /// last <c>", "</c>, trimmed, in Python <c>str.title()</c> case, <c>!</c> removed; US and UK spellings unified; commas
    /// and dots trimmed from both ends; the reference's table of regional and misdecoded names mapped to countries
    /// (kept as it is, e.g. <c>Baden-Württemberg</c> to <c>German</c>); empty, one-character and garbled values
    /// (<c>N/A</c>, <c>&amp;#</c>, <c>?</c>, <c>@</c>, <c>*</c>) become <c>unknown</c>. The reference then asserts that
    /// only ASCII letters, digits and <c>- .&amp;/()</c> remain; a value with any other character becomes <c>unknown</c>
    /// here instead of failing.
    /// </summary>
    internal static string CountryOf(string location)
    {
        int cut = location.LastIndexOf(", ", StringComparison.Ordinal);
        string x = cut < 0 ? location : location[(cut + 2)..];
        x = PythonTitle(x.Trim()).Replace("!", "", StringComparison.Ordinal).Trim();
        string lower = x.ToLowerInvariant();
        if (lower is "usa" or "us" or "u s" or "u s a") x = "USA";
        if (lower is "uk" or "u k") x = "UK";
        x = x.TrimEnd(',', '.').TrimStart(',', '.');
        if (x.ToUpperInvariant().Contains("U.S", StringComparison.Ordinal) && x != "U.S. Virgin Islands") x = "USA";
        if (x is "San José" or "San Jos" + Bad) x = "USA";
        if (SpainNames.Contains(x) || x.Contains("spain", StringComparison.OrdinalIgnoreCase)) x = "Spain";
        if (x == "L`Italia") x = "Italy";
        if (x is "Baden-Württemberg" or "Bademn Würtemberg" or "Baden-W" + Bad + "Rttemberg" or "Bademn W" + Bad + "Rtemberg") x = "German";
        if (x is "Cote D`Ivoire" or "Côte D" or "C" + Bad + "Te D") x = "Ivory Coast";
        if (x is "Oberösterreich" or "Ober" + Bad + "Sterreich") x = "Austria";
        if (x is "México" or "M" + Bad + "Xico") x = "Mexico";
        if (x is "Türkiye" or "Içel" or "T" + Bad + "Rkiye") x = "Turkey";
        if (x is "L`Algérie" or "Algérie" or "Kärnten" or "K" + Bad + "Rnten" or "L`Alg" + Bad + "Rie" or "Alg" + Bad + "Rie") x = "Algeria";
        if (x.Contains("Brasil", StringComparison.Ordinal)) x = "Brazil";
        if (x is "Rhône-Alpes" or "Rhône Alpes" or "Rh" + Bad + "Ne-Alpes" or "Rh" + Bad + "Ne Alpes") x = "France";
        if (x.Contains("Greece", StringComparison.Ordinal)) x = "Greece";
        if (x is "Santarém" or "Santar" + Bad + "M") x = "Portugal";
        if (x is "Länsi-Suomen Lääni" or "L" + Bad + "Nsi-Suomen L" + Bad + Bad + "Ni") x = "Finland";
        if (x is "V.Götaland" or "Nyhamnsläge" or "V.G" + Bad + "Taland" or "Nyhamnsl" + Bad + "Ge") x = "Sweden";
        if (x is "Moçambique" or "Mo" + Bad + "Ambique") x = "Mozambique";
        if (x is "Ix Región" or "Ix Regi" + Bad + "N") x = "Chile";
        if (x is "Ma" + Bad + "Opolskie" or "Ma³Opolskie") x = "Poland";
        if (x is "Per" + Bad or "Perãº") x = "Peru";
        if (x != "China" && (x.Contains("china", StringComparison.OrdinalIgnoreCase) || x is "La Chine Éternelle" or "La Chine " + BadUpper + "Ternelle")) x = "China";
        if (x == BadUpper + BadUpper + BadUpper) x = "China";
        if (x.Length <= 1 || x is "Öð¹Ú" or "ºþäï" or "We`Re Global" or BadUpper + BadUpper + BadUpper + BadUpper or "I" + Bad + "El"
            || x.Contains("N/A", StringComparison.Ordinal) || x.Contains("&#", StringComparison.Ordinal)
            || x.AsSpan().IndexOfAny("?@*") >= 0)
            x = Unknown;
        if (x.AsSpan().ContainsAnyExcept(LocationChars)) x = Unknown;
        return x;
    }

    /// <summary>U+FFFD's UTF-8 bytes read as cp1252 and title-cased (<c>ï¿½</c>), as the reference's table spells misdecoded letters.</summary>
    private const string Bad = "ï¿½";

    /// <summary>The same at the start of a word (<c>Ï¿½</c>).</summary>
    private const string BadUpper = "Ï¿½";

    private static readonly HashSet<string> SpainNames =
    [
        "España", "Castilla-León", "Espaã±A", "Cataluña", "Mérida", "Álava", "Málaga", "A Coruña", "Barcelonès", "Berguedà",
        "Espa" + Bad + "A", "Castilla-Le" + Bad + "N", "A Coru" + Bad + "A", "Catalu" + Bad + "A", "Barcelon" + Bad + "S",
        BadUpper + "Lava", "M" + Bad + "Rida", "Bergued" + Bad, "M" + Bad + "Laga",
    ];

    private static readonly System.Buffers.SearchValues<char> LocationChars =
        System.Buffers.SearchValues.Create("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz- .&/()");

    /// <summary>
    /// Python's <c>str.title()</c>: a cased letter after a cased letter is lower-cased, any other letter upper-cased
    /// (so <c>l`italia</c> becomes <c>L`Italia</c> and <c>new york</c> <c>New York</c>). Cased means an upper- or
    /// lower-case letter (plus <c>ª</c>, <c>º</c>, which Python counts as lower case).
    /// </summary>
    internal static string PythonTitle(string s)
    {
        var chars = s.ToCharArray();
        bool previousCased = false;
        for (int i = 0; i < chars.Length; i++)
        {
            char c = chars[i];
            bool cased = char.IsUpper(c) || char.IsLower(c) || c is 'ª' or 'º'
                || CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.TitlecaseLetter;
            if (cased) chars[i] = previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c);
            previousCased = cased;
        }
        return new string(chars);
    }

    // ---- goodbooks-10k ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Reads GoodReads goodbooks-10k from <paramref name="directory"/>: <c>books.csv</c> and <c>ratings.csv</c>, RFC 4180
    /// CSV in UTF-8 with headers (a quoted field of <c>books.csv</c> may span lines); columns are found by name, so both public layouts of <c>ratings.csv</c>
    /// (<c>user_id,book_id,rating</c> and <c>book_id,user_id,rating</c>) read the same. Items are keyed by
    /// <c>book_id</c>; <see cref="Item.Title"/> is <c>title</c>, <see cref="Item.Author"/> <c>authors</c>,
    /// <see cref="Item.Isbn"/> <c>isbn</c> as written (the public file lost leading zeros, e.g. <c>439023483</c>; empty is
    /// null), <see cref="Item.Year"/> <c>original_publication_year</c> without its <c>.0</c> (<c>2008.0</c> is
    /// <c>2008</c>, <c>-750.0</c> is <c>-750</c>, empty is null). No genres, no profiles, no publisher; users are numbered
    /// in first-seen order in <c>ratings.csv</c>. Ratings are whole numbers 1-5, label rating &gt; 3. No timestamps:
    /// <see cref="Rating.Timestamp"/> is the rating's 0-based record position in <c>ratings.csv</c> (the public file is
    /// sorted by time).
    /// </summary>
    public static RatingDataset ReadGoodReads(string directory, DatasetReadOptions options)
    {
        var bad = new BadLines(options);
        var items = new List<Item>();
        var itemRow = new KeyTable();
        using (var csv = new CsvRecordReader(Path.Combine(directory, "books.csv"), Encoding.UTF8, multiline: true))
        {
            int[] col = DatasetCsv.ReadHeader(csv, "book_id", "title", "authors", "original_publication_year", "isbn");
            int fields = csv.FieldCount;
            while (csv.Read())
            {
                if (csv.Error is not null) { bad.Report(csv.Location, $"{csv.Error}"); continue; }
                if (csv.FieldCount != fields) { bad.Report(csv.Location, $"expected {fields} fields, got {csv.FieldCount}"); continue; }
                var id = csv[col[0]];
                if (!DatasetCsv.IsId(id)) { bad.Report(csv.Location, $"book id '{DatasetCsv.Show(id)}' is not a positive integer"); continue; }
                string title = csv.GetString(col[1]);
                if (string.IsNullOrWhiteSpace(title)) { bad.Report(csv.Location, $"book {id} has an empty title"); continue; }
                var yearText = csv[col[3]];
                string? year = null;
                if (yearText.Length > 0)
                {
                    if (!double.TryParse(yearText, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double y)
                        || y != Math.Floor(y) || Math.Abs(y) > 100_000)
                    { bad.Report(csv.Location, $"original_publication_year '{DatasetCsv.Show(yearText)}' is not a whole year (like 2008.0)"); continue; }
                    year = ((long)y).ToString(CultureInfo.InvariantCulture);
                }
                string key = new(id);
                if (!itemRow.TryAdd(key)) { bad.Report(csv.Location, $"book id {key} appears twice"); continue; }
                string authors = csv.GetString(col[2]);
                string isbn = csv.GetString(col[4]);
                items.Add(new Item(key, title, [], Author: authors.Length > 0 ? authors : null, Year: year, Isbn: isbn.Length > 0 ? isbn : null));
            }
        }

        var users = new KeyTable();
        Rating[] ratings;
        string ratingsPath = Path.Combine(directory, "ratings.csv");
        using (var csv = new CsvRecordReader(ratingsPath, Encoding.UTF8))
        {
            int capacity = DatasetCsv.RecordCapacity(ratingsPath);
            int[] col = DatasetCsv.ReadHeader(csv, "user_id", "book_id", "rating");
            ratings = DatasetCsv.ReadRatings(csv, capacity, csv.FieldCount, col[0], col[1], col[2], timeColumn: -1, users, addUsers: true, itemRow,
                new RatingScale(1, 5), bad, "ratings.csv", "books.csv", dropUnknown: false, out _);
        }
        return new RatingDataset("goodreads", DatasetKind.GoodReads, ItemDomain.Books, items, users.Keys, profiles: null, ratings,
            hasTimestamps: false, labelThreshold: 3, skippedLines: bad.Count);
    }
}
