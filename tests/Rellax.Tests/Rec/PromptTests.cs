using System.Text;
using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary>Small hand-made datasets and sample sets for the prompt and training-file tests (no real data).</summary>
internal static class PromptFixtures
{
    /// <summary>
    /// A sample set over <paramref name="ratings"/>, which must list each user's events together and in history order
    /// (user 0's first, then user 1's, ...). Every event with at least <paramref name="minHistory"/> events before it in
    /// its user's timeline is a sample, in the order of <paramref name="ratings"/>, all in the training split.
    /// </summary>
    public static SampleSet Set(ItemDomain domain, string[] titles, UserProfile[]? profiles, int users, Rating[] ratings,
        float labelThreshold = 3, int minHistory = 5, DatasetKind kind = DatasetKind.Custom)
    {
        var items = titles.Select((t, i) => new Item(i.ToString(System.Globalization.CultureInfo.InvariantCulture), t, [])).ToArray();
        var keys = Enumerable.Range(0, users).Select(u => $"u{u}").ToArray();
        var ds = new RatingDataset("fixture", kind, domain, items, keys, profiles, ratings, hasTimestamps: true, labelThreshold);
        var start = new int[users + 1];
        foreach (var r in ratings) start[r.User + 1]++;
        for (int u = 0; u < users; u++) start[u + 1] += start[u];
        var samples = new List<ReLLaSample>();
        for (int u = 0; u < users; u++)
            for (int e = start[u] + minHistory; e < start[u + 1]; e++)
            {
                var r = ratings[e];
                samples.Add(new ReLLaSample(samples.Count, u, r.Item, r.Value, ds.IsPositive(r.Value), r.Timestamp, e - start[u], SampleSplit.Train));
            }
        return new SampleSet(ds, new SampleOptions { MinHistory = minHistory }, ratings, start, samples.ToArray());
    }

    /// <summary>Events of one user: (item, rating) pairs in history order, timestamps 1, 2, ...</summary>
    public static IEnumerable<Rating> Timeline(int user, params (int Item, float Value)[] events) =>
        events.Select((e, i) => new Rating(user, e.Item, e.Value, 1 + i));

    public static readonly string[] MovieTitles =
    [
        "Heat (1995)",                 // 0
        "Ulee's Gold (1997)",          // 1: a single quote
        "Say \"Hi\" & Bye's (2001)",   // 2: both quotes
        "Amélie (2001)",               // 3: non-ASCII
        "Toy Story (1995)",            // 4
        "Target Movie (1999)",         // 5: every sample's target
    ];

    /// <summary>User 0 (female, 25, writer) and user 1 (male, 35, engineer), five history events each, then item 5.
    /// Sample 0: user 0, rating 4 (positive); sample 1: user 1, rating 3 (negative: ratings &gt; 3 are positive).</summary>
    public static SampleSet MoviesWithProfile(UserProfile? user1 = null) => Set(ItemDomain.Movies, MovieTitles,
        [new UserProfile("female", "25", "writer"), user1 ?? new UserProfile("male", "35", "engineer")], 2,
        [
            .. Timeline(0, (0, 4), (1, 1), (2, 3.5f), (3, 5), (4, 2), (5, 4)),
            .. Timeline(1, (4, 5), (0, 1), (1, 2), (3, 3), (2, 4), (5, 3)),
        ], kind: DatasetKind.MovieLens100K);
}

/// <summary>
/// <see cref="ReLLaPromptBuilder"/>: the SPEC §1 texts, written out in full by hand. The list lines were checked with
/// Python 3.11 printing the same list, e.g.
/// <c>python3 -c "print(['0. Heat (1995) (4 stars)', \"1. Ulee's Gold (1997) (1 star)\", '2. Say \"Hi\" &amp; Bye\'s (2001) (3.5 stars)'])"</c>
/// prints <c>['0. Heat (1995) (4 stars)', "1. Ulee's Gold (1997) (1 star)", '2. Say "Hi" &amp; Bye\'s (2001) (3.5 stars)']</c>.
/// </summary>
[TestFixture]
public sealed class PromptTests
{
    private const string MovieTail =
        "Note that more stars the user rated the movie, the more the user liked the movie.\n" +
        "You should ONLY tell me yes or no.";

    private const string BookTail =
        "Note that more stars the user rated the book, the more the user liked the book.\n" +
        "You should ONLY tell me yes or no.";

    [Test]
    public void MoviesWithProfileFemaleRecentFiveHasEveryQuoteKindStarAndHalfStar()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var b = new ReLLaPromptBuilder(set);
        Assert.That(b.Style, Is.EqualTo(PromptStyle.MoviesWithProfile));
        var p = b.Build(set.Samples[0], ReLLaPromptBuilder.RecentPositions(5, 5));
        string expected =
            "The user is a female. Her job is writer. Her age is 25.\n" +
            "She watched the following movies in order in the past, and rated them:\n" +
            """['0. Heat (1995) (4 stars)', "1. Ulee's Gold (1997) (1 star)", '2. Say "Hi" & Bye\'s (2001) (3.5 stars)', '3. Amélie (2001) (5 stars)', '4. Toy Story (1995) (2 stars)']""" + "\n" +
            "Based on the movies she has watched, deduce if she will like the movie ***Target Movie (1999)***.\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
        Assert.That(p.HistoryItems, Is.EqualTo(new[] { 0, 1, 2, 3, 4 }));
        Assert.That(p.TargetItem, Is.EqualTo(5));
        Assert.That(p.Label, Is.True);
    }

    [Test]
    public void MoviesWithProfileMaleRecentThreeTakesTheLastThreeOldestFirst()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var p = new ReLLaPromptBuilder(set).BuildRecent(set.Samples[1], 3);
        // user 1's history: Toy Story 5, Heat 1, Ulee's Gold 2, Amélie 3, Say "Hi" 4; recent-3 = positions 2, 3, 4
        string expected =
            "The user is a male. His job is engineer. His age is 35.\n" +
            "He watched the following movies in order in the past, and rated them:\n" +
            """["0. Ulee's Gold (1997) (2 stars)", '1. Amélie (2001) (3 stars)', '2. Say "Hi" & Bye\'s (2001) (4 stars)']""" + "\n" +
            "Based on the movies he has watched, deduce if he will like the movie ***Target Movie (1999)***.\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
        Assert.That(p.Label, Is.False);
    }

    [Test]
    public void ScoreOrderedSubrPositionsWithSpaMarkersKeepTheGivenOrderAndRenumberFromZero()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var b = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = true });
        var p = b.Build(set.Samples[1], [3, 0, 1]);
        string expected =
            "The user is a male. His job is engineer. His age is 35.\n" +
            "He watched the following movies in order in the past, and rated them:\n" +
            "['0. Amélie (2001) (3 stars)[hist]', '1. Toy Story (1995) (5 stars)[hist]', '2. Heat (1995) (1 star)[hist]']\n" +
            "Based on the movies he has watched, deduce if he will like the movie ***Target Movie (1999)***[target].\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
        Assert.That(p.HistoryItems, Is.EqualTo(new[] { 3, 4, 0 }));
    }

    [Test]
    public void ChronologicalSubrPositionsWithCustomMarkersPutTheMarkerInsideTheQuotes()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var b = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = true, HistToken = "<h>", TargetToken = "<t>" });
        var p = b.Build(set.Samples[0], [1, 2, 3]);
        string expected =
            "The user is a female. Her job is writer. Her age is 25.\n" +
            "She watched the following movies in order in the past, and rated them:\n" +
            """["0. Ulee's Gold (1997) (1 star)<h>", '1. Say "Hi" & Bye\'s (2001) (3.5 stars)<h>', '2. Amélie (2001) (5 stars)<h>']""" + "\n" +
            "Based on the movies she has watched, deduce if she will like the movie ***Target Movie (1999)***<t>.\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
    }

    [Test]
    public void MissingProfileFieldsPrintUnknownAndPronounsDefaultToHe()
    {
        var set = PromptFixtures.MoviesWithProfile(new UserProfile(null, null, null));
        var p = new ReLLaPromptBuilder(set).Build(set.Samples[1], [0]);
        string expected =
            "The user is a unknown. His job is unknown. His age is unknown.\n" +
            "He watched the following movies in order in the past, and rated them:\n" +
            "['0. Toy Story (1995) (5 stars)']\n" +
            "Based on the movies he has watched, deduce if he will like the movie ***Target Movie (1999)***.\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
    }

    [Test]
    public void EmptyPositionListIsAnEmptyPythonList()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var p = new ReLLaPromptBuilder(set).Build(set.Samples[0], []);
        Assert.That(p.Text, Does.Contain("rated them:\n[]\nBased on"));
        Assert.That(p.HistoryItems, Is.Empty);
    }

    private static SampleSet HalfStarMovies() => PromptFixtures.Set(ItemDomain.Movies,
        ["A (2000)", "B (2001)", "C (2002)", "D (2003)", "E (2004)", "F (2005)"], null, 1,
        [.. PromptFixtures.Timeline(0, (0, 0.5f), (1, 1), (2, 1.5f), (3, 4.5f), (4, 5), (5, 3.5f))], kind: DatasetKind.MovieLens25M);

    [Test]
    public void MoviesWithoutProfileHalfStarsAndTheStarBoundary()
    {
        var set = HalfStarMovies();
        var b = new ReLLaPromptBuilder(set);
        Assert.That(b.Style, Is.EqualTo(PromptStyle.MoviesWithoutProfile));
        var p = b.BuildRecent(set.Samples[0], 30);
        string expected =
            "The user watched the following movies in the past, and rated them:\n" +
            "['0. A (2000) (0.5 star)', '1. B (2001) (1 star)', '2. C (2002) (1.5 stars)', '3. D (2003) (4.5 stars)', '4. E (2004) (5 stars)']\n" +
            "Based on the movies the user has watched, deduce if the user will like the movie ***F (2005)***.\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
        Assert.That(p.Label, Is.True); // 3.5 > 3
    }

    [Test]
    public void MoviesWithoutProfileWithSpaMarkers()
    {
        var set = HalfStarMovies();
        var p = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = true }).Build(set.Samples[0], [4, 0]);
        string expected =
            "The user watched the following movies in the past, and rated them:\n" +
            "['0. E (2004) (5 stars)[hist]', '1. A (2000) (0.5 star)[hist]']\n" +
            "Based on the movies the user has watched, deduce if the user will like the movie ***F (2005)***[target].\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
    }

    private static readonly string[] BookTitles =
    [
        "Clara Callan",                           // 0
        "Harry Potter and the Sorcerer's Stone",  // 1
        "Decision in Normandy",                   // 2
        "Flu",                                    // 3
        "The Mummies of Urumchi",                 // 4
        "Classical Mythology",                    // 5
    ];

    private static SampleSet BookCrossing(string? location) => PromptFixtures.Set(ItemDomain.Books, BookTitles,
        [new UserProfile(null, "25-34", null, location)], 1,
        [.. PromptFixtures.Timeline(0, (0, 0), (1, 1), (2, 8), (3, 10), (4, 5), (5, 7))], labelThreshold: 4, kind: DatasetKind.BookCrossing);

    [Test]
    public void BooksWithProfileZeroToTenRatings()
    {
        var set = BookCrossing("usa");
        var b = new ReLLaPromptBuilder(set);
        Assert.That(b.Style, Is.EqualTo(PromptStyle.BooksWithProfile));
        var p = b.BuildRecent(set.Samples[0], 60);
        string expected =
            "The user's location is usa. The user's age is 25-34.\n" +
            "The user read the following books in the past, and rated them:\n" +
            """['0. Clara Callan (0 star)', "1. Harry Potter and the Sorcerer's Stone (1 star)", '2. Decision in Normandy (8 stars)', '3. Flu (10 stars)', '4. The Mummies of Urumchi (5 stars)']""" + "\n" +
            "Based on the books the user has read, deduce if the user will like the book ***Classical Mythology***.\n" +
            BookTail;
        Assert.That(p.Text, Is.EqualTo(expected));
        Assert.That(p.Label, Is.True); // 7 >= 5
    }

    [Test]
    public void BooksWithProfileMarkersAndUnknownLocation()
    {
        var set = BookCrossing(null);
        var p = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = true }).Build(set.Samples[0], [3, 1]);
        string expected =
            "The user's location is unknown. The user's age is 25-34.\n" +
            "The user read the following books in the past, and rated them:\n" +
            """['0. Flu (10 stars)[hist]', "1. Harry Potter and the Sorcerer's Stone (1 star)[hist]"]""" + "\n" +
            "Based on the books the user has read, deduce if the user will like the book ***Classical Mythology***[target].\n" +
            BookTail;
        Assert.That(p.Text, Is.EqualTo(expected));
    }

    private static SampleSet GoodReads() => PromptFixtures.Set(ItemDomain.Books, BookTitles, null, 1,
        [.. PromptFixtures.Timeline(0, (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 2))], kind: DatasetKind.GoodReads);

    [Test]
    public void BooksWithoutProfileRecentTwo()
    {
        var set = GoodReads();
        var b = new ReLLaPromptBuilder(set);
        Assert.That(b.Style, Is.EqualTo(PromptStyle.BooksWithoutProfile));
        var p = b.BuildRecent(set.Samples[0], 2);
        string expected =
            "The user read the following books in the past, and rated them:\n" +
            "['0. Flu (4 stars)', '1. The Mummies of Urumchi (5 stars)']\n" +
            "Based on the books the user has read, deduce if the user will like the book ***Classical Mythology***.\n" +
            BookTail;
        Assert.That(p.Text, Is.EqualTo(expected));
        Assert.That(p.Label, Is.False);
    }

    [Test]
    public void BooksWithoutProfileWithMarkers()
    {
        var set = GoodReads();
        var p = new ReLLaPromptBuilder(set, new PromptOptions { SpaMarkers = true }).Build(set.Samples[0], [0, 1]);
        string expected =
            "The user read the following books in the past, and rated them:\n" +
            """['0. Clara Callan (1 star)[hist]', "1. Harry Potter and the Sorcerer's Stone (2 stars)[hist]"]""" + "\n" +
            "Based on the books the user has read, deduce if the user will like the book ***Classical Mythology***[target].\n" +
            BookTail;
        Assert.That(p.Text, Is.EqualTo(expected));
    }

    /// <summary>
    /// A real ML-100K user (139: male, 20, student) whose history has a non-ASCII title and two with apostrophes. The
    /// timeline is the user's ratings sorted by (timestamp, item); the sample is event 10 (Fargo), recent-8 = events 2..9.
    /// Expected list line and target from Python over the raw files:
    /// <c>cd shared/data/movielens/ml-100k &amp;&amp; python3 -c "items={l.split('|')[0]:l.split('|')[1] for l in open('u.item',encoding='latin-1')};
    /// ev=sorted((int(t),int(i),int(r)) for u,i,r,t in (l.split() for l in open('u.data')) if u=='139');
    /// h=[f'{items[str(i)]} ({r} stars)' if r&gt;1 else f'{items[str(i)]} ({r} star)' for _,i,r in ev[2:10]];
    /// print(list(map(lambda x: f'{x[0]}. {x[1]}', enumerate(h)))); print(items[str(ev[10][1])], ev[10], len(ev))"</c>
    /// (the list expression is the reference's <c>load_prompt_ml1m.py</c> one) printed the list below, then
    /// <c>Fargo (1996) (879538199, 100, 5) 24</c>; <c>grep '^139|' u.user</c> gives <c>139|20|M|student|08904</c>.
    /// </summary>
    [Test]
    public void MovieLens100KUserWithAccentsAndApostrophesMatchesPython()
    {
        string dir = TestData.RequireShared("movielens/ml-100k");
        var ds = DatasetReader.Read(DatasetKind.MovieLens100K, dir);
        int user = ds.UserKeys.ToList().IndexOf("139");
        Assert.That(user, Is.GreaterThanOrEqualTo(0));
        var mine = ds.Ratings.ToArray().Where(r => r.User == user)
            .OrderBy(r => r.Timestamp).ThenBy(r => int.Parse(ds.Items[r.Item].Key, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        Assert.That(mine, Has.Length.EqualTo(24));
        var start = new int[ds.UserKeys.Count + 1];
        for (int u = user + 1; u <= ds.UserKeys.Count; u++) start[u] = mine.Length;
        var sample = new ReLLaSample(0, user, mine[10].Item, mine[10].Value, true, mine[10].Timestamp, 10, SampleSplit.Test);
        var set = new SampleSet(ds, new SampleOptions(), mine, start, [sample]);
        var p = new ReLLaPromptBuilder(set).BuildRecent(set.Samples[0], 8);
        string expected =
            "The user is a male. His job is student. His age is 20.\n" +
            "He watched the following movies in order in the past, and rated them:\n" +
            """['0. Nénette et Boni (1996) (5 stars)', '1. Kolya (1996) (3 stars)', '2. Chasing Amy (1997) (4 stars)', "3. Devil's Advocate, The (1997) (4 stars)", '4. Scream (1996) (4 stars)', "5. Ulee's Gold (1997) (5 stars)", '6. Welcome To Sarajevo (1997) (4 stars)', '7. Michael Collins (1996) (5 stars)']""" + "\n" +
            "Based on the movies he has watched, deduce if he will like the movie ***Fargo (1996)***.\n" +
            MovieTail;
        Assert.That(p.Text, Is.EqualTo(expected));
    }

    [Test]
    public void StyleFollowsDomainAndProfiles()
    {
        Assert.Multiple(() =>
        {
            Assert.That(ReLLaPromptBuilder.StyleOf(PromptFixtures.MoviesWithProfile().Dataset), Is.EqualTo(PromptStyle.MoviesWithProfile));
            Assert.That(ReLLaPromptBuilder.StyleOf(HalfStarMovies().Dataset), Is.EqualTo(PromptStyle.MoviesWithoutProfile));
            Assert.That(ReLLaPromptBuilder.StyleOf(BookCrossing("usa").Dataset), Is.EqualTo(PromptStyle.BooksWithProfile));
            Assert.That(ReLLaPromptBuilder.StyleOf(GoodReads().Dataset), Is.EqualTo(PromptStyle.BooksWithoutProfile));
        });
    }

    [TestCase(-1, 0)]
    [TestCase(5, 1)]
    [TestCase(int.MaxValue, 1)]
    public void PositionOutsideTheHistoryNamesIndexValueAndLength(int bad, int at)
    {
        var set = PromptFixtures.MoviesWithProfile();
        var b = new ReLLaPromptBuilder(set);
        int[] positions = at == 0 ? [bad, 1] : [0, bad];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => b.Build(set.Samples[0], positions))!;
        Assert.That(ex.Message, Does.Contain($"historyPositions[{at}] = {bad} is outside sample 0's history of 5 events"));
        Assert.That(ex.ParamName, Is.EqualTo("historyPositions"));
    }

    [Test]
    public void RepeatedPositionIsRejected()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var ex = Assert.Throws<ArgumentException>(() => new ReLLaPromptBuilder(set).Build(set.Samples[0], [2, 0, 2]))!;
        Assert.That(ex.Message, Does.Contain("position 2"));
    }

    [Test]
    public void SampleOfAnotherSetIsRejected()
    {
        var set = PromptFixtures.MoviesWithProfile();
        var other = HalfStarMovies();
        var ex = Assert.Throws<ArgumentException>(() => new ReLLaPromptBuilder(set).Build(other.Samples[0], [0]))!;
        Assert.That(ex.Message, Does.Contain("is not sample 0 of this builder's sample set"));
        var forged = set.Samples[0] with { Index = 7 };
        Assert.Throws<ArgumentException>(() => new ReLLaPromptBuilder(set).Build(forged, [0]));
    }

    [TestCase(10, 3, new[] { 7, 8, 9 })]
    [TestCase(2, 5, new[] { 0, 1 })]
    [TestCase(5, 5, new[] { 0, 1, 2, 3, 4 })]
    [TestCase(0, 3, new int[0])]
    [TestCase(1, 1, new[] { 0 })]
    public void RecentPositionsAreTheLastKOldestFirst(int length, int k, int[] expected) =>
        Assert.That(ReLLaPromptBuilder.RecentPositions(length, k), Is.EqualTo(expected));

    [Test]
    public void RecentPositionsRejectsBadArguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ReLLaPromptBuilder.RecentPositions(5, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReLLaPromptBuilder.RecentPositions(-1, 3));
    }

    /// <summary>
    /// <c>repr(str)</c> against what Python 3.11 prints: each expected value is the output of
    /// <c>python3 -c "print(repr(S))"</c> for the input S (written here with C# escapes).
    /// </summary>
    [TestCase("a'b", "\"a'b\"")]
    [TestCase("a\"b", "'a\"b'")]
    [TestCase("a'b\"c", "'a\\'b\"c'")]
    [TestCase("a\\b", "'a\\\\b'")]
    [TestCase("\n\t\r", "'\\n\\t\\r'")]
    [TestCase("\u0001\u007f", "'\\x01\\x7f'")]
    [TestCase("é", "'é'")]
    [TestCase("\u00a0", "'\\xa0'")]
    [TestCase("\u00ad", "'\\xad'")]
    [TestCase("\u0085", "'\\x85'")]
    [TestCase("ÿĀ", "'ÿĀ'")]
    [TestCase("\u200b", "'\\u200b'")]
    [TestCase("\u2028", "'\\u2028'")]
    [TestCase("\ue000", "'\\ue000'")]
    [TestCase("😀", "'😀'")]
    [TestCase("\U000e0001", "'\\U000e0001'")]
    [TestCase("", "''")]
    [TestCase("x\ty'z", "\"x\\ty'z\"")]
    [TestCase("Amélie's \"x\" \\ end", "'Amélie\\'s \"x\" \\\\ end'")]
    [TestCase("ééabc\n", "'ééabc\\n'")]
    public void ReprMatchesPython(string s, string expected)
    {
        var sb = new StringBuilder();
        PythonText.AppendRepr(sb, s);
        Assert.That(sb.ToString(), Is.EqualTo(expected));
    }

    /// <summary>A lone surrogate (not expressible in an attribute's UTF-8 string): <c>python3 -c "print(repr('a\ud800b'))"</c>
    /// prints <c>'a\ud800b'</c>; a high surrogate at the very end as well.</summary>
    [Test]
    public void ReprEscapesLoneSurrogatesAsPythonDoes()
    {
        var sb = new StringBuilder();
        PythonText.AppendRepr(sb, "a\ud800b");
        PythonText.AppendRepr(sb, "x\udbff");
        Assert.That(sb.ToString(), Is.EqualTo("'a\\ud800b''x\\udbff'"));
    }
}
