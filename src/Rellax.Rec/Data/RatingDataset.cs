using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>The public datasets <see cref="DatasetReader"/> reads, plus <see cref="Custom"/> for data built in code.</summary>
public enum DatasetKind
{
    /// <summary>MovieLens-100K: <c>u.data</c>, <c>u.item</c>, <c>u.user</c> (tab / <c>|</c> separated, ISO-8859-1).</summary>
    MovieLens100K,
    /// <summary>MovieLens-1M: <c>ratings.dat</c>, <c>movies.dat</c>, <c>users.dat</c> (<c>::</c> separated, ISO-8859-1).</summary>
    MovieLens1M,
    /// <summary>MovieLens-25M: <c>ratings.csv</c>, <c>movies.csv</c> (RFC 4180 CSV, UTF-8, half-star ratings, no user profiles).</summary>
    MovieLens25M,
    /// <summary>Book-Crossing: <c>BX-Book-Ratings.csv</c>, <c>BX-Books.csv</c>, <c>BX-Users.csv</c> (<c>;</c> separated, quoted, cp1252; no timestamps).</summary>
    BookCrossing,
    /// <summary>GoodReads goodbooks-10k: <c>ratings.csv</c>, <c>books.csv</c> (CSV, UTF-8; no timestamps, ratings in file order).</summary>
    GoodReads,
    /// <summary>A dataset built in code (for example the demo's synthetic data).</summary>
    Custom,
}

/// <summary>What the items are: it picks the prompt's wording (<c>watched</c>/<c>movies</c> or <c>read</c>/<c>books</c>).</summary>
public enum ItemDomain
{
    /// <summary>Movies (MovieLens).</summary>
    Movies,
    /// <summary>Books (Book-Crossing, GoodReads).</summary>
    Books,
}

/// <summary>One item of a dataset, with the text fields the prompts and SUBR's item sentences use.</summary>
/// <param name="Key">The item's id in the source files, as text (a MovieLens movie id, an ISBN, a goodbooks book id).</param>
/// <param name="Title">The title as the prompts show it (MovieLens titles include the year: <c>Toy Story (1995)</c>).</param>
/// <param name="Genres">Genres in file order (may be empty); SUBR's item sentence uses the first.</param>
/// <param name="Author">Books: the author(s), as in the file.</param>
/// <param name="Year">Books: the publication year, as text.</param>
/// <param name="Publisher">Books: the publisher.</param>
/// <param name="Isbn">Books: the ISBN.</param>
public sealed record Item(string Key, string Title, IReadOnlyList<string> Genres, string? Author = null, string? Year = null,
    string? Publisher = null, string? Isbn = null);

/// <summary>
/// A user's profile as the prompts use it (SPEC §1). MovieLens: <see cref="Gender"/> (<c>male</c>/<c>female</c>),
/// <see cref="Age"/> and <see cref="Job"/> as the prompt prints them. Book-Crossing: <see cref="Location"/> (the
/// country) and <see cref="Age"/> (a bucket). A field the source does not give is null.
/// </summary>
/// <param name="Gender"><c>male</c> or <c>female</c>, or null.</param>
/// <param name="Age">The age as the prompt prints it (<c>24</c>, <c>25-34</c>, ...), or null.</param>
/// <param name="Job">The occupation as the prompt prints it, or null.</param>
/// <param name="Location">The country (Book-Crossing), or null.</param>
public sealed record UserProfile(string? Gender, string? Age, string? Job, string? Location = null);

/// <summary>One rating event, in dense indices.</summary>
/// <param name="User">Row of <see cref="RatingDataset.UserKeys"/>.</param>
/// <param name="Item">Row of <see cref="RatingDataset.Items"/>.</param>
/// <param name="Value">The rating in the dataset's own scale (MovieLens 1-5, half stars in ML-25M; Book-Crossing 0-10).</param>
/// <param name="Timestamp">Seconds since the Unix epoch; for datasets without timestamps, the 0-based line order of the
/// rating in its file (see <see cref="RatingDataset.HasTimestamps"/>).</param>
public readonly record struct Rating(int User, int Item, float Value, long Timestamp);

/// <summary>
/// A rating dataset in memory: items, users (with profiles where the source has them) and rating events in file order,
/// all in dense 0-based indices. Built by <see cref="DatasetReader"/> from the public files or by the caller in code.
/// Immutable after construction.
/// </summary>
public sealed class RatingDataset
{
    /// <summary>Creates a dataset and checks that every index is in range.</summary>
    /// <param name="name">A short name for messages and manifests (e.g. <c>movielens-100k</c>).</param>
    /// <param name="kind">Where it came from; <see cref="DatasetKind.Custom"/> for data built in code.</param>
    /// <param name="domain">Movies or books: picks the prompt wording.</param>
    /// <param name="items">The items; <see cref="Rating.Item"/> indexes this list.</param>
    /// <param name="userKeys">Each user's id in the source, as text; <see cref="Rating.User"/> indexes this list.</param>
    /// <param name="profiles">One profile per user, or null when the source has none (ML-25M, GoodReads).</param>
    /// <param name="ratings">The rating events in file order (the array is kept, not copied).</param>
    /// <param name="hasTimestamps">False when <see cref="Rating.Timestamp"/> is the line order (Book-Crossing, GoodReads):
    /// samples then use the per-user hold-out protocol (SPEC §1).</param>
    /// <param name="labelThreshold">A rating is positive when it is greater than this (MovieLens and GoodReads 3,
    /// Book-Crossing 4, i.e. rating &gt;= 5).</param>
    /// <param name="skippedLines">Malformed lines skipped while reading (0 unless skipping was asked for).</param>
    /// <exception cref="ArgumentException">An index out of range, a count mismatch, or a non-finite rating; the message names the rating.</exception>
    public RatingDataset(string name, DatasetKind kind, ItemDomain domain, IReadOnlyList<Item> items, IReadOnlyList<string> userKeys,
        IReadOnlyList<UserProfile>? profiles, Rating[] ratings, bool hasTimestamps, float labelThreshold, int skippedLines = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(userKeys);
        ArgumentNullException.ThrowIfNull(ratings);
        if (profiles is not null && profiles.Count != userKeys.Count)
            throw new ArgumentException($"{profiles.Count} profiles for {userKeys.Count} users", nameof(profiles));
        if (!float.IsFinite(labelThreshold)) throw new ArgumentException($"label threshold {labelThreshold} is not finite", nameof(labelThreshold));
        ArgumentOutOfRangeException.ThrowIfNegative(skippedLines);
        for (int i = 0; i < ratings.Length; i++)
        {
            var r = ratings[i];
            if ((uint)r.User >= (uint)userKeys.Count)
                throw new ArgumentException($"rating {i}: user index {r.User} is outside [0, {userKeys.Count})", nameof(ratings));
            if ((uint)r.Item >= (uint)items.Count)
                throw new ArgumentException($"rating {i}: item index {r.Item} is outside [0, {items.Count})", nameof(ratings));
            if (!float.IsFinite(r.Value)) throw new ArgumentException($"rating {i}: value {r.Value} is not finite", nameof(ratings));
        }
        Name = name;
        Kind = kind;
        Domain = domain;
        Items = items;
        UserKeys = userKeys;
        Profiles = profiles;
        Ratings = ratings;
        HasTimestamps = hasTimestamps;
        LabelThreshold = labelThreshold;
        SkippedLines = skippedLines;
    }

    /// <summary>Short name (e.g. <c>movielens-100k</c>).</summary>
    public string Name { get; }

    /// <summary>Where the data came from.</summary>
    public DatasetKind Kind { get; }

    /// <summary>Movies or books.</summary>
    public ItemDomain Domain { get; }

    /// <summary>The items, indexed by <see cref="Rating.Item"/>.</summary>
    public IReadOnlyList<Item> Items { get; }

    /// <summary>Each user's source id as text, indexed by <see cref="Rating.User"/>.</summary>
    public IReadOnlyList<string> UserKeys { get; }

    /// <summary>One profile per user, or null when the source has no user profiles.</summary>
    public IReadOnlyList<UserProfile>? Profiles { get; }

    /// <summary>The rating events in file order.</summary>
    public ReadOnlyMemory<Rating> Ratings { get; }

    /// <summary>True when <see cref="Rating.Timestamp"/> is a real time; false when it is the line order.</summary>
    public bool HasTimestamps { get; }

    /// <summary>A rating is a positive sample when its value is greater than this.</summary>
    public float LabelThreshold { get; }

    /// <summary>Malformed source lines that were skipped (only with <see cref="DatasetReadOptions.SkipBadLines"/>).</summary>
    public int SkippedLines { get; }

    /// <summary>
    /// Well-formed ratings that the dataset's own protocol leaves out while reading (Book-Crossing: ratings of an ISBN
    /// not among the books or of a user not among the users, as the reference preprocessing drops them); 0 elsewhere.
    /// Not counted in <see cref="SkippedLines"/>, which counts malformed lines only.
    /// </summary>
    public int FilteredRatings { get; init; }

    /// <summary>The label of a rating value: <c>value &gt; LabelThreshold</c>.</summary>
    public bool IsPositive(float value) => value > LabelThreshold;
}

/// <summary>How <see cref="DatasetReader.Read"/> treats the source files.</summary>
public sealed record DatasetReadOptions
{
    /// <summary>
    /// Skip malformed lines instead of failing, and count them in <see cref="RatingDataset.SkippedLines"/> (each one is
    /// also passed to <see cref="SkippedExamples"/>). Off by default: a malformed line is an
    /// <see cref="RecordException"/> naming the file and line.
    /// </summary>
    public bool SkipBadLines { get; init; }

    /// <summary>When skipping, receives <c>FILE:LINE: what is wrong</c> for each skipped line (may be null).</summary>
    public Action<string>? SkippedExamples { get; init; }
}
