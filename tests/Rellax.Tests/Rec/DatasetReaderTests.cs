using System.Text;
using NUnit.Framework;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="DatasetReader"/> on hand-made fixtures for every dataset (written into a temporary folder in each
/// dataset's encoding, with non-ASCII bytes: <c>é</c> as ISO-8859-1 0xE9 for ML-1M, <c>’</c> as cp1252 0x92 for
/// Book-Crossing), every class of malformed line (strict: <see cref="RecordException"/> starting <c>FILE:LINE:</c>;
/// skipping: counted, the rest read), and the real files under <c>shared/data</c> with counts and rows checked against
/// the raw files by shell commands cited beside them.
/// </summary>
[TestFixture]
public sealed class DatasetReaderTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("rellax-datasets-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    // ---- fixtures --------------------------------------------------------------------------------------------------
    // Non-ASCII characters are written through Latin-1 (one byte per char below U+0100), so U+0092 becomes the byte
    // 0x92, which cp1252 reads as ’ (U+2019), and é becomes 0xE9. UTF-8 files are written as UTF-8 without a BOM.

    private static readonly Encoding Utf8 = new UTF8Encoding(false);

    private static readonly Dictionary<string, string[]> MovieLens1M = new()
    {
        ["movies.dat"] =
        [
            "1::Toy Story (1995)::Animation|Children's|Comedy",
            "73::Mis\u00e9rables, Les (1995)::Drama|Musical",
            "3::Heat (1995)::Action|Crime|Thriller",
        ],
        ["users.dat"] =
        [
            "1::F::1::10::48067",
            "2::M::56::16::70072",
            "3::M::25::0::55117",
        ],
        ["ratings.dat"] =
        [
            "1::1::5::978300760",
            "1::73::3::978302109",
            "2::3::4::978301968",
            "3::73::1::978300275",
        ],
    };

    private static readonly Dictionary<string, string[]> MovieLens25M = new()
    {
        ["movies.csv"] =
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
            "11,\"American President, The (1995)\",Comedy|Drama|Romance",
            "27,\"Am\u00e9lie \"\"Le fabuleux\"\" (2001)\",Comedy|Romance",
            "131262,Innocence (2014),(no genres listed)",
        ],
        ["ratings.csv"] =
        [
            "userId,movieId,rating,timestamp",
            "1,1,3.5,1147880044",
            "1,11,0.5,1147868817",
            "3,27,5.0,1439474476",
            "2,131262,4,1573938898",
        ],
    };

    private static readonly Dictionary<string, string[]> BookCrossing = new()
    {
        ["BX-Books.csv"] =
        [
            "\"ISBN\";\"Book-Title\";\"Book-Author\";\"Year-Of-Publication\";\"Publisher\";\"Image-URL-S\";\"Image-URL-M\";\"Image-URL-L\"",
            "\"0195153448\";\"Classical Mythology\";\"Mark P. O. Morford\";\"2002\";\"Oxford University Press\";\"s\";\"m\";\"l\"",
            "\"0002005018\";\"Clara Callan\";\"Richard Bruce Wright\";\"2001\";\"HarperFlamingo Canada\";\"s\";\"m\";\"l\"",
            "\"0374157065\";\"Flu; The Story\";\"Gina Bari Kolata\";\"1999\";\"Farrar Straus Giroux\";\"s\";\"m\";\"l\"",
            "\"0399135782\";\"The Kitchen God\u0092s Wife\";\"Amy Tan\";\"0\";\"N/A\";\"s\";\"m\";\"l\"",
            "\"0789466953\";\"DK Readers: Creating the X-Men (Level 4)\\\";James Buckley\";\"2000\";\"DK Publishing Inc\";\"s\";\"m\";\"l\"",
            "\"0-123\";\"Dashed ISBN\";\"A\";\"1990\";\"P\";\"s\";\"m\";\"l\"",
            "\"0440234743\";\"The \\\"Testament\\\" &amp; Co\";\"John Grisham\";\"1999\";\"Dell\";\"s\";\"m\";\"l\"",
        ],
        ["BX-Users.csv"] =
        [
            "\"User-ID\";\"Location\";\"Age\"",
            "\"1\";\"nyc, new york, usa\";NULL",
            "\"2\";\"stockton, california, usa\";\"18\"",
            "\"3\";\"moscow, yukon territory, russia\";NULL",
            "\"4\";\"porto, v.n.gaia, portugal\";\"17\"",
            "\"5\";\"barcelona, barcelona, espa\u00f1a\";\"62\"",
            "\"6\";\"cologne, nrw, germany\";\"150\"",
            "\"7\";\"\";\"34\"",
        ],
        ["BX-Book-Ratings.csv"] =
        [
            "\"User-ID\";\"ISBN\";\"Book-Rating\"",
            "\"1\";\"0195153448\";\"0\"",
            "\"2\";\"0002005018\";\"5\"",
            "\"2\";\"0374157065\";\"4\"",
            "\"99\";\"0195153448\";\"8\"",
            "\"3\";\"9999999999\";\"7\"",
            "\"3\";\"0-123\";\"9\"",
            "\"4\";\"0399135782\";\"10\"",
            "\"5\";\"0789466953\";\"6\"",
        ],
    };

    private static readonly Dictionary<string, string[]> GoodReads = new()
    {
        ["books.csv"] =
        [
            "book_id,goodreads_book_id,isbn,authors,original_publication_year,title,language_code",
            "1,2767052,439023483,Suzanne Collins,2008.0,\"The Hunger Games (The Hunger Games, #1)\",eng",
            "2,3,,\"J.K. Rowling, Mary GrandPr\u00e9\",1997.0,\"Harry Potter and the Sorcerer's Stone (Harry Potter, #1)\",eng",
            "3,41865,316015849,Homer,-750.0,\"The \"\"Iliad\"\"\",grc",
            "4,1,x,Anon,,Untitled,eng",
        ],
        ["ratings.csv"] =
        [
            "book_id,user_id,rating",
            "1,10,5",
            "2,10,3",
            "1,7,4",
            "3,7,1",
        ],
    };

    private static (Dictionary<string, string[]> Files, Encoding Encoding) Fixture(DatasetKind kind) => kind switch
    {
        DatasetKind.MovieLens1M => (MovieLens1M, Encoding.Latin1),
        DatasetKind.MovieLens25M => (MovieLens25M, Utf8),
        DatasetKind.BookCrossing => (BookCrossing, Encoding.Latin1),
        DatasetKind.GoodReads => (GoodReads, Utf8),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>Writes the fixture of <paramref name="kind"/>, with <paramref name="badLine"/> inserted as line
    /// <paramref name="lineNumber"/> of <paramref name="file"/> when given; returns the folder.</summary>
    private string WriteFixture(DatasetKind kind, string? file = null, int lineNumber = 0, string? badLine = null, string sub = "data")
    {
        var (files, encoding) = Fixture(kind);
        string dir = Path.Combine(_dir, sub);
        Directory.CreateDirectory(dir);
        foreach (var (name, lines) in files)
        {
            var list = lines.ToList();
            if (name == file) list.Insert(lineNumber - 1, badLine!);
            File.WriteAllBytes(Path.Combine(dir, name), encoding.GetBytes(string.Join("\n", list) + "\n"));
        }
        return dir;
    }

    // ---- well-formed fixtures --------------------------------------------------------------------------------------

    [Test]
    public void MovieLens1MFixture()
    {
        string dir = WriteFixture(DatasetKind.MovieLens1M);
        Assert.That(File.ReadAllBytes(Path.Combine(dir, "movies.dat")), Does.Contain((byte)0xE9), "fixture holds é as ISO-8859-1");
        var d = DatasetReader.Read(DatasetKind.MovieLens1M, dir);
        Assert.That((d.Name, d.Kind, d.Domain, d.HasTimestamps, d.LabelThreshold, d.SkippedLines),
            Is.EqualTo(("movielens-1m", DatasetKind.MovieLens1M, ItemDomain.Movies, true, 3f, 0)));
        Assert.That(d.Items.Select(i => i.Key), Is.EqualTo(new[] { "1", "73", "3" }));
        Assert.That(d.Items[1].Title, Is.EqualTo("Misérables, Les (1995)"));
        Assert.That(d.Items[0].Genres, Is.EqualTo(new[] { "Animation", "Children's", "Comedy" }));
        Assert.That(d.UserKeys, Is.EqualTo(new[] { "1", "2", "3" }));
        // code tables of the reference ml-1m.ipynb: age 1 -> "under 18", 56 -> "above 56", 25 -> "25-34";
        // job 10 -> "K-12 student", 16 -> "self-employed", 0 -> "other or not specified"
        Assert.That(d.Profiles, Is.EqualTo(new[]
        {
            new UserProfile("female", "under 18", "K-12 student"),
            new UserProfile("male", "above 56", "self-employed"),
            new UserProfile("male", "25-34", "other or not specified"),
        }));
        Assert.That(d.Ratings.ToArray(), Is.EqualTo(new[]
        {
            new Rating(0, 0, 5, 978300760), new Rating(0, 1, 3, 978302109), new Rating(1, 2, 4, 978301968), new Rating(2, 1, 1, 978300275),
        }));
    }

    [Test]
    public void MovieLens1MAgeAndJobTablesMatchTheReference()
    {
        // typed from the reference's data_preprocess/ml-1m.ipynb (age_dict, job_dict)
        Assert.That(MovieLensReaders.MovieLens1MAges.OrderBy(p => p.Key).Select(p => $"{p.Key}:{p.Value}"), Is.EqualTo(new[]
        {
            "1:under 18", "18:18-24", "25:25-34", "35:35-44", "45:45-49", "50:50-55", "56:above 56",
        }));
        Assert.That(MovieLensReaders.MovieLens1MJobs, Has.Length.EqualTo(21));
        Assert.That(MovieLensReaders.MovieLens1MJobs[4], Is.EqualTo("college/grad student"));
        Assert.That(MovieLensReaders.MovieLens1MJobs[17], Is.EqualTo("technician/engineer"));
        Assert.That(MovieLensReaders.MovieLens1MJobs[20], Is.EqualTo("writer"));
    }

    [Test]
    public void MovieLens25MFixture()
    {
        string dir = WriteFixture(DatasetKind.MovieLens25M);
        var d = DatasetReader.Read(DatasetKind.MovieLens25M, dir);
        Assert.That((d.Kind, d.Domain, d.HasTimestamps, d.LabelThreshold, d.Profiles), Is.EqualTo((DatasetKind.MovieLens25M, ItemDomain.Movies, true, 3f, (IReadOnlyList<UserProfile>?)null)));
        Assert.That(d.Items.Select(i => i.Title), Is.EqualTo(new[]
        {
            "Toy Story (1995)", "American President, The (1995)", "Amélie \"Le fabuleux\" (2001)", "Innocence (2014)",
        }));
        Assert.That(d.Items[1].Genres, Is.EqualTo(new[] { "Comedy", "Drama", "Romance" }));
        Assert.That(d.Items[3].Genres, Is.Empty, "(no genres listed) is no genre");
        Assert.That(d.UserKeys, Is.EqualTo(new[] { "1", "3", "2" }), "first-seen order in ratings.csv");
        Assert.That(d.Ratings.ToArray(), Is.EqualTo(new[]
        {
            new Rating(0, 0, 3.5f, 1147880044), new Rating(0, 1, 0.5f, 1147868817), new Rating(1, 2, 5f, 1439474476), new Rating(2, 3, 4f, 1573938898),
        }));
        Assert.That(d.IsPositive(3.5f) && !d.IsPositive(3f), Is.True, "3.5 is positive, 3 is not");
    }

    [Test]
    public void BookCrossingFixture()
    {
        string dir = WriteFixture(DatasetKind.BookCrossing);
        Assert.That(File.ReadAllBytes(Path.Combine(dir, "BX-Books.csv")), Does.Contain((byte)0x92), "fixture holds ’ as cp1252 0x92");
        var d = DatasetReader.Read(DatasetKind.BookCrossing, dir);
        Assert.That((d.Kind, d.Domain, d.HasTimestamps, d.LabelThreshold, d.SkippedLines, d.FilteredRatings),
            Is.EqualTo((DatasetKind.BookCrossing, ItemDomain.Books, false, 4f, 0, 3)));
        Assert.That(d.Items.Select(i => i.Key), Is.EqualTo(new[] { "0195153448", "0002005018", "0374157065", "0399135782", "0789466953", "0440234743" }),
            "the book with ISBN 0-123 is left out (reference ISBN check)");
        Assert.That(d.Items[0], Is.EqualTo(new Item("0195153448", "Classical Mythology", [], "Mark P. O. Morford", "2002", "Oxford University Press", "0195153448"))
            .Using<Item>(SameItem));
        Assert.That(d.Items[2].Title, Is.EqualTo("Flu; The Story"), "separator inside quotes");
        Assert.That(d.Items[3].Title, Is.EqualTo("The Kitchen God\u2019s Wife"), "cp1252 0x92 is U+2019");
        Assert.That((d.Items[3].Year, d.Items[3].Publisher), Is.EqualTo(((string?)null, (string?)null)), "year 0 and publisher N/A are unknown");
        Assert.That((d.Items[4].Title, d.Items[4].Author, d.Items[4].Year, d.Items[4].Publisher),
            Is.EqualTo(("DK Readers: Creating the X-Men (Level 4)", "James Buckley", "2000", "DK Publishing Inc")), "title\\\";author repaired");
        Assert.That(d.Items[5].Title, Is.EqualTo("The \\\"Testament\\\" &amp; Co"), "kept as written, as the reference keeps it");
        Assert.That(d.UserKeys, Is.EqualTo(new[] { "1", "2", "3", "4", "5", "6", "7" }));
        Assert.That(d.Profiles!.Select(p => $"{p.Location}|{p.Age}|{p.Gender ?? "-"}|{p.Job ?? "-"}"), Is.EqualTo(new[]
        {
            "USA|unknown|-|-", "USA|18-24|-|-", "Russia|unknown|-|-", "Portugal|under 18|-|-", "Spain|60+|-|-", "Germany|unknown|-|-", "unknown|30-34|-|-",
        }));
        // kept: records 0, 1, 2, 6, 7 (0-based after the header); 3 (user 99), 4 (unknown ISBN) and 5 (dropped book) are filtered
        Assert.That(d.Ratings.ToArray(), Is.EqualTo(new[]
        {
            new Rating(0, 0, 0, 0), new Rating(1, 1, 5, 1), new Rating(1, 2, 4, 2), new Rating(3, 3, 10, 6), new Rating(4, 4, 6, 7),
        }));
        Assert.That((d.IsPositive(5), d.IsPositive(4), d.IsPositive(0)), Is.EqualTo((true, false, false)), "label = rating >= 5");
    }

    private static bool SameItem(Item a, Item b) =>
        a.Key == b.Key && a.Title == b.Title && a.Genres.SequenceEqual(b.Genres) && a.Author == b.Author && a.Year == b.Year
        && a.Publisher == b.Publisher && a.Isbn == b.Isbn;

    [Test]
    public void GoodReadsFixtureFindsColumnsByName()
    {
        string dir = WriteFixture(DatasetKind.GoodReads);
        var d = DatasetReader.Read(DatasetKind.GoodReads, dir);
        Assert.That((d.Kind, d.Domain, d.HasTimestamps, d.LabelThreshold, d.Profiles), Is.EqualTo((DatasetKind.GoodReads, ItemDomain.Books, false, 3f, (IReadOnlyList<UserProfile>?)null)));
        Assert.That(d.Items[0], Is.EqualTo(new Item("1", "The Hunger Games (The Hunger Games, #1)", [], "Suzanne Collins", "2008", null, "439023483")).Using<Item>(SameItem));
        Assert.That(d.Items[1], Is.EqualTo(new Item("2", "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)", [], "J.K. Rowling, Mary GrandPré", "1997", null, null)).Using<Item>(SameItem));
        Assert.That((d.Items[2].Title, d.Items[2].Year), Is.EqualTo(("The \"Iliad\"", "-750")));
        Assert.That(d.Items[3].Year, Is.Null);
        Assert.That(d.UserKeys, Is.EqualTo(new[] { "10", "7" }));
        // ratings.csv here is book_id,user_id,rating: columns go by header name
        Assert.That(d.Ratings.ToArray(), Is.EqualTo(new[] { new Rating(0, 0, 5, 0), new Rating(0, 1, 3, 1), new Rating(1, 0, 4, 2), new Rating(1, 2, 1, 3) }));

        // the other public layout, user_id,book_id,rating, gives the same dataset
        File.WriteAllText(Path.Combine(dir, "ratings.csv"), "user_id,book_id,rating\n10,1,5\n10,2,3\n7,1,4\n7,3,1\n");
        var e = DatasetReader.Read(DatasetKind.GoodReads, dir);
        Assert.That(e.Ratings.ToArray(), Is.EqualTo(d.Ratings.ToArray()));
        Assert.That(e.UserKeys, Is.EqualTo(d.UserKeys));
    }

    // ---- malformed lines -------------------------------------------------------------------------------------------

    /// <summary>(dataset, file, 1-based line the bad line is inserted as, the bad line, a fragment of the message).</summary>
    private static IEnumerable<TestCaseData> BadLineCases()
    {
        TestCaseData Case(DatasetKind kind, string file, int line, string bad, string fragment, string what) =>
            new TestCaseData(kind, file, line, bad, fragment).SetName($"BadLine_{kind}_{file.Replace('.', '_')}_{what}");

        // ML-1M
        yield return Case(DatasetKind.MovieLens1M, "movies.dat", 2, "4::Extra (1999)", "expected 3 '::'-separated fields", "FieldCount");
        yield return Case(DatasetKind.MovieLens1M, "movies.dat", 2, "x4::Extra (1999)::Drama", "movie id 'x4' is not a positive integer", "NonNumericId");
        yield return Case(DatasetKind.MovieLens1M, "movies.dat", 4, "1::Again (1999)::Drama", "movie id 1 appears twice", "DuplicateId");
        yield return Case(DatasetKind.MovieLens1M, "users.dat", 2, "4::X::25::1::12345", "gender 'X' is not M or F", "Gender");
        yield return Case(DatasetKind.MovieLens1M, "users.dat", 2, "4::M::26::1::12345", "age code '26'", "AgeCode");
        yield return Case(DatasetKind.MovieLens1M, "users.dat", 2, "4::M::25::21::12345", "occupation code '21'", "JobCode");
        yield return Case(DatasetKind.MovieLens1M, "users.dat", 2, "u4::M::25::1::12345", "user id 'u4' is not a positive integer", "NonNumericId");
        yield return Case(DatasetKind.MovieLens1M, "users.dat", 4, "1::M::25::1::12345", "user id 1 appears twice", "DuplicateId");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "1::3::5", "expected 4 '::'-separated fields", "FieldCount");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "9::3::5::978300760", "user id '9' is not in users.dat", "UnknownUser");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "1::99::5::978300760", "movie id '99' is not in movies.dat", "UnknownItem");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "1::3::five::978300760", "rating 'five' is not a whole number from 1 to 5", "NonNumericRating");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "1::3::6::978300760", "rating '6'", "RatingAbove");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "1::3::0::978300760", "rating '0'", "RatingBelow");
        yield return Case(DatasetKind.MovieLens1M, "ratings.dat", 3, "1::3::5::yesterday", "timestamp 'yesterday'", "NonNumericTimestamp");

        // ML-25M
        yield return Case(DatasetKind.MovieLens25M, "movies.csv", 3, "5,Extra (1999)", "expected 3 fields, got 2", "FieldCount");
        yield return Case(DatasetKind.MovieLens25M, "movies.csv", 3, "5,\"Unclosed (1999),Drama", "unterminated quoted field 2", "UnterminatedQuote");
        yield return Case(DatasetKind.MovieLens25M, "movies.csv", 3, "5,\"Closed\" (1999),Drama", "after the closing quote", "TextAfterQuote");
        yield return Case(DatasetKind.MovieLens25M, "movies.csv", 3, "m5,Extra (1999),Drama", "movie id 'm5' is not a positive integer", "NonNumericId");
        yield return Case(DatasetKind.MovieLens25M, "movies.csv", 4, "11,Again (1995),Drama", "movie id 11 appears twice", "DuplicateId");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "1,1,3.5", "expected 4 fields, got 3", "FieldCount");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "u1,1,3.5,1147880044", "user id 'u1' is not a positive integer", "NonNumericUser");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "1,999,3.5,1147880044", "item id '999' is not in movies.csv", "UnknownItem");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "4,1,3.25,1147880044", "rating '3.25' is not a multiple of 0.5 from 0.5 to 5.0", "QuarterStar");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "4,1,5.5,1147880044", "rating '5.5'", "RatingAbove");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "4,1,0,1147880044", "rating '0'", "RatingBelow");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "4,1,abc,1147880044", "rating 'abc'", "NonNumericRating");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "4,1,3.5,soon", "timestamp 'soon'", "NonNumericTimestamp");
        yield return Case(DatasetKind.MovieLens25M, "ratings.csv", 3, "4,\"1,3.5,1147880044", "unterminated quoted field 2", "UnterminatedQuote");

        // Book-Crossing
        yield return Case(DatasetKind.BookCrossing, "BX-Books.csv", 3, "\"0000000001\";\"Short\";\"A\"", "expected 8 ';'-separated fields, got 3", "FieldCount");
        yield return Case(DatasetKind.BookCrossing, "BX-Books.csv", 3, "\"0000000002\";\"T\";\"A\";\"2000\";\"P\";\"s\";\"m\";\"l", "unterminated quoted field 8", "UnterminatedQuote");
        yield return Case(DatasetKind.BookCrossing, "BX-Books.csv", 3, "\"0195153448\";\"Again\";\"A\";\"2000\";\"P\";\"s\";\"m\";\"l\"", "ISBN 0195153448 appears twice", "DuplicateId");
        yield return Case(DatasetKind.BookCrossing, "BX-Books.csv", 3, "\"0000000003\";\"\";\"A\";\"2000\";\"P\";\"s\";\"m\";\"l\"", "ISBN 0000000003 has an empty title", "EmptyTitle");
        yield return Case(DatasetKind.BookCrossing, "BX-Users.csv", 3, "\"8\";\"a, b, usa\"", "expected 3 ';'-separated fields, got 2", "FieldCount");
        yield return Case(DatasetKind.BookCrossing, "BX-Users.csv", 3, "\"x8\";\"a, b, usa\";NULL", "user id 'x8' is not a positive integer", "NonNumericId");
        yield return Case(DatasetKind.BookCrossing, "BX-Users.csv", 3, "\"8\";\"a, b, usa\";\"old\"", "age 'old' is not a whole number or NULL", "NonNumericAge");
        yield return Case(DatasetKind.BookCrossing, "BX-Users.csv", 3, "\"1\";\"a, b, usa\";NULL", "user id 1 appears twice", "DuplicateId");
        yield return Case(DatasetKind.BookCrossing, "BX-Book-Ratings.csv", 3, "\"2\";\"0002005018\"", "expected 3 fields, got 2", "FieldCount");
        yield return Case(DatasetKind.BookCrossing, "BX-Book-Ratings.csv", 3, "\"two\";\"0002005018\";\"5\"", "user id 'two' is not a positive integer", "NonNumericUser");
        yield return Case(DatasetKind.BookCrossing, "BX-Book-Ratings.csv", 3, "\"2\";\"0002005018\";\"11\"", "rating '11' is not a whole number from 0 to 10", "RatingAbove");
        yield return Case(DatasetKind.BookCrossing, "BX-Book-Ratings.csv", 3, "\"2\";\"0002005018\";\"-1\"", "rating '-1'", "RatingBelow");
        yield return Case(DatasetKind.BookCrossing, "BX-Book-Ratings.csv", 3, "\"2\";\"0002005018\";\"5", "unterminated quoted field 3", "UnterminatedQuote");

        // goodbooks-10k
        yield return Case(DatasetKind.GoodReads, "books.csv", 3, "5,9,123,A,2000.0", "expected 7 fields, got 5", "FieldCount");
        yield return Case(DatasetKind.GoodReads, "books.csv", 3, "b5,9,123,A,2000.0,T,eng", "book id 'b5' is not a positive integer", "NonNumericId");
        yield return Case(DatasetKind.GoodReads, "books.csv", 3, "5,9,123,A,twenty,T,eng", "original_publication_year 'twenty'", "NonNumericYear");
        yield return Case(DatasetKind.GoodReads, "books.csv", 3, "5,9,123,A,2000.5,T,eng", "original_publication_year '2000.5'", "FractionalYear");
        yield return Case(DatasetKind.GoodReads, "books.csv", 3, "1,9,123,A,2000.0,T,eng", "book id 1 appears twice", "DuplicateId");
        yield return Case(DatasetKind.GoodReads, "books.csv", 3, "5,9,123,A,2000.0,\"T,eng", "unterminated quoted field 6", "UnterminatedQuote");
        yield return Case(DatasetKind.GoodReads, "ratings.csv", 3, "1,10", "expected 3 fields, got 2", "FieldCount");
        yield return Case(DatasetKind.GoodReads, "ratings.csv", 3, "99,10,5", "item id '99' is not in books.csv", "UnknownItem");
        yield return Case(DatasetKind.GoodReads, "ratings.csv", 3, "1,11,0", "rating '0' is not a whole number from 1 to 5", "RatingBelow");
        yield return Case(DatasetKind.GoodReads, "ratings.csv", 3, "1,11,4.5", "rating '4.5'", "HalfStar");
        yield return Case(DatasetKind.GoodReads, "ratings.csv", 3, "1,ten,4", "user id 'ten' is not a positive integer", "NonNumericUser");
    }

    [TestCaseSource(nameof(BadLineCases))]
    public void BadLineFailsWithFileAndLine(DatasetKind kind, string file, int line, string bad, string fragment)
    {
        string dir = WriteFixture(kind, file, line, bad);
        string prefix = $"{Path.Combine(dir, file)}:{line}: ";
        var e = Assert.Throws<RecordException>(() => DatasetReader.Read(kind, dir));
        Assert.That(e!.Message, Does.StartWith(prefix));
        Assert.That(e.Message, Does.Contain(fragment));
    }

    [TestCaseSource(nameof(BadLineCases))]
    public void BadLineIsSkippedAndCounted(DatasetKind kind, string file, int line, string bad, string fragment)
    {
        string cleanDir = WriteFixture(kind, sub: "clean");
        var clean = DatasetReader.Read(kind, cleanDir);
        string dir = WriteFixture(kind, file, line, bad);
        var messages = new List<string>();
        var d = DatasetReader.Read(kind, dir, new DatasetReadOptions { SkipBadLines = true, SkippedExamples = messages.Add });
        Assert.That(d.SkippedLines, Is.EqualTo(1));
        Assert.That(messages, Has.Count.EqualTo(1));
        Assert.That(messages[0], Does.StartWith($"{Path.Combine(dir, file)}:{line}: ").And.Contain(fragment));
        // everything else is read as without the bad line (Book-Crossing and goodbooks count lines for timestamps,
        // so only those shift when a ratings line is inserted before them)
        Assert.That(d.Items.Select(i => (i.Key, i.Title)), Is.EqualTo(clean.Items.Select(i => (i.Key, i.Title))));
        Assert.That(d.UserKeys, Is.EqualTo(clean.UserKeys));
        Assert.That(d.Profiles, Is.EqualTo(clean.Profiles));
        Assert.That(d.Ratings.ToArray().Select(r => (r.User, r.Item, r.Value)), Is.EqualTo(clean.Ratings.ToArray().Select(r => (r.User, r.Item, r.Value))));
        Assert.That(d.FilteredRatings, Is.EqualTo(clean.FilteredRatings));
    }

    [Test]
    public void SkippingCountsEveryBadLine()
    {
        // three bad lines in two files of ML-1M
        string dir = WriteFixture(DatasetKind.MovieLens1M, "ratings.dat", 2, "1::3::9::978300760");
        File.AppendAllText(Path.Combine(dir, "ratings.dat"), "garbage\n1::1::5\n", Encoding.Latin1);
        var d = DatasetReader.Read(DatasetKind.MovieLens1M, dir, new DatasetReadOptions { SkipBadLines = true });
        Assert.That(d.SkippedLines, Is.EqualTo(3));
        Assert.That(d.Ratings.Length, Is.EqualTo(4));
    }

    [Test]
    public void HeaderProblemsAreNeverSkipped()
    {
        var skip = new DatasetReadOptions { SkipBadLines = true };
        string dir = WriteFixture(DatasetKind.MovieLens25M);
        string ratings = Path.Combine(dir, "ratings.csv");
        File.WriteAllText(ratings, "userId,itemId,rating,timestamp\n1,1,3.5,1147880044\n");
        var e = Assert.Throws<RecordException>(() => DatasetReader.Read(DatasetKind.MovieLens25M, dir, skip));
        Assert.That(e!.Message, Does.StartWith($"{ratings}:1: header has no column 'movieId'")
            .And.Contain("expected the columns userId,movieId,rating,timestamp, got userId,itemId,rating,timestamp"));

        File.WriteAllText(ratings, "");
        e = Assert.Throws<RecordException>(() => DatasetReader.Read(DatasetKind.MovieLens25M, dir, skip));
        Assert.That(e!.Message, Does.StartWith($"{ratings}:1: the file is empty"));

        string bx = WriteFixture(DatasetKind.BookCrossing, sub: "bx");
        string users = Path.Combine(bx, "BX-Users.csv");
        File.WriteAllText(users, "\"User-ID\";\"Location\"\n\"1\";\"x, usa\"\n");
        e = Assert.Throws<RecordException>(() => DatasetReader.Read(DatasetKind.BookCrossing, bx, skip));
        Assert.That(e!.Message, Does.StartWith($"{users}:1: header has no column 'Age'"));
    }

    [Test]
    public void MissingFileIsNamed()
    {
        string dir = WriteFixture(DatasetKind.GoodReads);
        File.Delete(Path.Combine(dir, "ratings.csv"));
        var e = Assert.Throws<FileNotFoundException>(() => DatasetReader.Read(DatasetKind.GoodReads, dir));
        Assert.That(e!.Message, Does.Contain(Path.Combine(dir, "ratings.csv")));

        string ml = WriteFixture(DatasetKind.MovieLens1M, sub: "ml");
        File.Delete(Path.Combine(ml, "users.dat"));
        e = Assert.Throws<FileNotFoundException>(() => DatasetReader.Read(DatasetKind.MovieLens1M, ml));
        Assert.That(e!.Message, Does.Contain(Path.Combine(ml, "users.dat")));

        Assert.Throws<DirectoryNotFoundException>(() => DatasetReader.Read(DatasetKind.MovieLens1M, Path.Combine(_dir, "none")));
    }

    // ---- Book-Crossing profile rules (reference BookCrossing.ipynb) --------------------------------------------------

    [TestCase(null, "unknown")]
    [TestCase(0, "unknown")]
    [TestCase(4, "unknown")]
    [TestCase(5, "under 18")]
    [TestCase(17, "under 18")]
    [TestCase(18, "18-24")]
    [TestCase(24, "18-24")]
    [TestCase(25, "25-29")]
    [TestCase(29, "25-29")]
    [TestCase(30, "30-34")]
    [TestCase(44, "40-44")]
    [TestCase(45, "45-49")]
    [TestCase(54, "50-54")]
    [TestCase(55, "55-59")]
    [TestCase(59, "55-59")]
    [TestCase(60, "60+")]
    [TestCase(100, "60+")]
    [TestCase(101, "unknown")]
    public void AgeBucket(int? age, string expected) => Assert.That(BookReaders.AgeBucket(age), Is.EqualTo(expected));

    // expected values worked out by hand from convert_location_to_country in the reference notebook
    [TestCase("nyc, new york, usa", "USA")]
    [TestCase("somewhere, texas, u.s.a.", "USA")]
    [TestCase("x, y, united states", "United States")]
    [TestCase("london, england, united kingdom", "United Kingdom")]
    [TestCase("leeds, yorkshire, u k", "UK")]
    [TestCase("roma, lazio, l`italia", "Italy")]
    [TestCase("stuttgart, baden-w\u00fcrttemberg", "German")]
    [TestCase("madrid, madrid, espa\u00f1a", "Spain")]
    [TestCase("x, y, new spain land", "Spain")]
    [TestCase("rio, rj, brasil", "Brazil")]
    [TestCase("athens, attica, greece!", "Greece")]
    [TestCase("beijing, beijing, p.r.china", "China")]
    [TestCase("x, la chine \u00e9ternelle", "China")]
    [TestCase("auckland, auckland, new zealand.", "New Zealand")]
    [TestCase("x, y, n/a", "unknown")]
    [TestCase("x, y, &#20013;&#22269;", "unknown")]
    [TestCase("x, y, ", "unknown")]
    [TestCase("x, y, z", "unknown")]
    [TestCase("x, y, ?", "unknown")]
    [TestCase("x, y, k\u00f8benhavn", "unknown")]
    [TestCase("Portland, OREGON, USA", "USA")]
    [TestCase("x, y, trinidad and tobago", "Trinidad And Tobago")]
    public void CountryOfLocation(string location, string expected) => Assert.That(BookReaders.CountryOf(location), Is.EqualTo(expected));

    [TestCase("l`italia", "L`Italia")]
    [TestCase("they're here", "They'Re Here")]
    [TestCase("p.r.china", "P.R.China")]
    [TestCase("NEW YORK", "New York")]
    [TestCase("baden-w\u00fcrttemberg", "Baden-W\u00fcrttemberg")]
    [TestCase("2nd place", "2Nd Place")]
    public void PythonTitleCase(string s, string expected) => Assert.That(BookReaders.PythonTitle(s), Is.EqualTo(expected));

    [Test]
    public void Cp1252WorksUnderInvariantGlobalization()
    {
        // 0x80 euro, 0x92 right single quote, 0x9C oe, 0xE9 e-acute: the cp1252 table, not Latin-1's C1 controls
        Assert.That(BookReaders.Cp1252.GetString([0x80, 0x92, 0x9C, 0xE9]), Is.EqualTo("\u20AC\u2019\u0153\u00E9"));
    }

    // ---- names -----------------------------------------------------------------------------------------------------

    [TestCase("movielens-100k", DatasetKind.MovieLens100K)]
    [TestCase("movielens-1m", DatasetKind.MovieLens1M)]
    [TestCase("movielens-25m", DatasetKind.MovieLens25M)]
    [TestCase("bookcrossing", DatasetKind.BookCrossing)]
    [TestCase("goodreads", DatasetKind.GoodReads)]
    [TestCase("MovieLens-1M", DatasetKind.MovieLens1M)]
    [TestCase("BookCrossing", DatasetKind.BookCrossing)]
    public void ParseKind(string name, DatasetKind expected)
    {
        Assert.That(DatasetReader.ParseKind(name), Is.EqualTo(expected));
        Assert.That(DatasetReader.NameOf(expected), Is.EqualTo(name.ToLowerInvariant()));
    }

    [TestCase("movielens")]
    [TestCase("")]
    [TestCase("custom")]
    public void ParseKindRejectsUnknownNames(string name)
    {
        var e = Assert.Throws<ArgumentException>(() => DatasetReader.ParseKind(name));
        Assert.That(e!.Message, Does.Contain($"unknown dataset '{name}'").And.Contain("movielens-100k, movielens-1m, movielens-25m, bookcrossing, goodreads"));
    }

    // ---- real data -------------------------------------------------------------------------------------------------

    [Test]
    public void MovieLens100KRealData()
    {
        string dir = TestData.RequireShared("movielens/ml-100k");
        var d = DatasetReader.Read(DatasetKind.MovieLens100K, dir);
        // wc -l u.user u.item u.data  ->  943, 1682, 100000
        Assert.That((d.UserKeys.Count, d.Items.Count, d.Ratings.Length, d.SkippedLines), Is.EqualTo((943, 1682, 100_000, 0)));
        // head -1 u.data  ->  196	242	3	881250949
        var first = d.Ratings.Span[0];
        Assert.That((d.UserKeys[first.User], d.Items[first.Item].Key, first.Value, first.Timestamp), Is.EqualTo(("196", "242", 3f, 881250949L)));
        // head -1 u.item  ->  1|Toy Story (1995)|...|0|0|0|1|1|1|0|... (flags 3, 4, 5 = Animation, Children's, Comedy)
        Assert.That(d.Items[0].Title, Is.EqualTo("Toy Story (1995)"));
        Assert.That(d.Items[0].Genres, Is.EqualTo(new[] { "Animation", "Children's", "Comedy" }));
        // head -1 u.user  ->  1|24|M|technician|85711
        Assert.That(d.Profiles![0], Is.EqualTo(new UserProfile("male", "24", "technician")));
        // awk -F'\t' '$3>3' u.data | wc -l  ->  55375
        int positives = 0;
        foreach (var r in d.Ratings.Span) if (d.IsPositive(r.Value)) positives++;
        Assert.That(positives, Is.EqualTo(55_375));
    }

    [Test]
    public void MovieLens1MPartialRealData()
    {
        string source = TestData.RequireShared("movielens/ml-1m-partial");
        string dir = Path.Combine(_dir, "ml-1m");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(source, "movies.dat"), Path.Combine(dir, "movies.dat"));
        File.Copy(Path.Combine(source, "users.dat"), Path.Combine(dir, "users.dat"));
        File.WriteAllText(Path.Combine(dir, "ratings.dat"), "6040::73::5::978300000\n1::3952::2::978300001\n1::1::4::978300002\n");
        var d = DatasetReader.Read(DatasetKind.MovieLens1M, dir);
        // grep -c '' movies.dat users.dat  ->  3883, 6040
        Assert.That((d.Items.Count, d.UserKeys.Count, d.Ratings.Length), Is.EqualTo((3883, 6040, 3)));
        // sed -n 73p movies.dat | xxd  ->  73::Mis\xe9rables, Les (1995)::Drama|Musical  (ISO-8859-1 é)
        Assert.That(d.Items[72], Is.EqualTo(new Item("73", "Misérables, Les (1995)", ["Drama", "Musical"])).Using<Item>(SameItem));
        // tail -1 movies.dat  ->  3952::Contender, The (2000)::Drama|Thriller
        Assert.That(d.Items[^1].Title, Is.EqualTo("Contender, The (2000)"));
        // head -1 users.dat  ->  1::F::1::10::48067 ; tail -1 users.dat  ->  6040::M::25::6::11106
        Assert.That(d.Profiles![0], Is.EqualTo(new UserProfile("female", "under 18", "K-12 student")));
        Assert.That(d.Profiles[^1], Is.EqualTo(new UserProfile("male", "25-34", "doctor/health care")));
        // awk -F'::' '{print $3}' users.dat | sort | uniq -c  ->  222 x 1, 380 x 56, 2096 x 25
        Assert.That(d.Profiles.Count(p => p.Age == "under 18"), Is.EqualTo(222));
        Assert.That(d.Profiles.Count(p => p.Age == "above 56"), Is.EqualTo(380));
        Assert.That(d.Profiles.Count(p => p.Age == "25-34"), Is.EqualTo(2096));
        var r = d.Ratings.Span[1];
        Assert.That((d.UserKeys[r.User], d.Items[r.Item].Key, r.Value), Is.EqualTo(("1", "3952", 2f)));
    }

    [Test]
    public void GoodReadsRealBooksWithSampleRatings()
    {
        string books = TestData.RequireShared("goodbooks-10k/books.csv");
        string ratings = TestData.RequireShared("goodbooks-10k/samples/ratings.csv");
        string dir = Path.Combine(_dir, "goodbooks");
        Directory.CreateDirectory(dir);
        File.Copy(books, Path.Combine(dir, "books.csv"));
        File.Copy(ratings, Path.Combine(dir, "ratings.csv"));
        var d = DatasetReader.Read(DatasetKind.GoodReads, dir);
        // python3 -c "import csv; print(len(list(csv.reader(open('books.csv', newline=''))))-1)"  ->  10000
        Assert.That(d.Items.Count, Is.EqualTo(10_000));
        // head -3 books.csv: book 2 = 439554934 / "J.K. Rowling, Mary GrandPré" / 1997.0 / "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)"
        Assert.That(d.Items[1], Is.EqualTo(new Item("2", "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)", [], "J.K. Rowling, Mary GrandPré", "1997", null, "439554934"))
            .Using<Item>(SameItem));
        // csv.reader: book 341 is "The Iliad", original_publication_year -750.0; books 106 and 121 have an empty isbn
        Assert.That((d.Items[340].Title, d.Items[340].Year), Is.EqualTo(("The Iliad", "-750")));
        Assert.That(d.Items[105].Isbn, Is.Null);
        // awk 'END{print NR}' samples/ratings.csv -> 100 (header + 99); awk -F, 'NR>1{print $1}' | sort -u | wc -l -> 5
        Assert.That((d.Ratings.Length, d.UserKeys.Count), Is.EqualTo((99, 5)));
        // awk -F, 'NR>1{print $1}' samples/ratings.csv | awk '!s[$0]++' | head -3  ->  1 2 4
        Assert.That(d.UserKeys.Take(3), Is.EqualTo(new[] { "1", "2", "4" }));
        // tail -1 samples/ratings.csv  ->  4,219,4 (the 99th rating: line order 98)
        var last = d.Ratings.Span[^1];
        Assert.That((d.UserKeys[last.User], d.Items[last.Item].Key, last.Value, last.Timestamp), Is.EqualTo(("4", "219", 4f, 98L)));
        // awk -F, 'NR>1 && $3>3' samples/ratings.csv | wc -l  ->  73
        int positives = 0;
        foreach (var r in d.Ratings.Span) if (d.IsPositive(r.Value)) positives++;
        Assert.That(positives, Is.EqualTo(73));
    }
}
