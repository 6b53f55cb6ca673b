using System.Globalization;
using System.Text;

namespace Rellax.Rec;

/// <summary>The ReLLa prompt wordings (SPEC §1).</summary>
public enum PromptStyle
{
    /// <summary>MovieLens with a user profile (ML-100K, ML-1M): gender, job, age; he/she.</summary>
    MoviesWithProfile,
    /// <summary>MovieLens without a profile (ML-25M): "The user watched ...", "the user".</summary>
    MoviesWithoutProfile,
    /// <summary>Books with a location/age profile (Book-Crossing): "The user's location is ...".</summary>
    BooksWithProfile,
    /// <summary>Books without a profile (GoodReads): "The user read ...", "the user".</summary>
    BooksWithoutProfile,
}

/// <summary>How <see cref="ReLLaPromptBuilder"/> renders prompts.</summary>
public sealed record PromptOptions
{
    /// <summary>Put SPA's soft-token markers in the text: <see cref="HistToken"/> after each history item's rating
    /// parenthesis and <see cref="TargetToken"/> after the target title (SPEC §3).</summary>
    public bool SpaMarkers { get; init; }

    /// <summary>The history marker (default <c>[hist]</c>; must match the adapter's).</summary>
    public string HistToken { get; init; } = "[hist]";

    /// <summary>The target marker (default <c>[target]</c>; must match the adapter's).</summary>
    public string TargetToken { get; init; } = "[target]";
}

/// <summary>A rendered prompt and what SPA needs to fill its markers.</summary>
/// <param name="Text">The prompt (without the chat template: the scorer applies that).</param>
/// <param name="HistoryItems">The history items in the order the prompt lists them (rows of <see cref="RatingDataset.Items"/>).</param>
/// <param name="TargetItem">The target item.</param>
/// <param name="Label">The sample's label.</param>
public sealed record ReLLaPrompt(string Text, int[] HistoryItems, int TargetItem, bool Label);

/// <summary>
/// Renders ReLLa prompts (SPEC §1) for the samples of a <see cref="SampleSet"/>. The caller picks which history events
/// appear and in what order (recent-K: <see cref="RecentPositions"/>, the reference code's <c>simple</c> template;
/// SUBR-K: the positions <see cref="SubrIndex.Retrieve"/> returns, chronological for <c>sequential</c> or by score).
/// The builder is immutable: <see cref="Build"/> may run on several threads at once.
/// <para><b>The templates.</b> Lines are joined with <c>\n</c> (no trailing newline), as the reference's f-strings join
/// them. <c>{history}</c> is the Python list literal described below; <c>{title}</c> is the target's
/// <see cref="Item.Title"/> as is; <c>{T}</c> is the target marker when <see cref="PromptOptions.SpaMarkers"/> is on
/// and empty otherwise.</para>
/// <para><see cref="PromptStyle.MoviesWithProfile"/> (ML-100K, ML-1M; the reference's <c>load_prompt_ml1m.py</c>):</para>
/// <code>
/// The user is a {gender}. {His|Her} job is {job}. {His|Her} age is {age}.
/// {He|She} watched the following movies in order in the past, and rated them:
/// {history}
/// Based on the movies {he|she} has watched, deduce if {he|she} will like the movie ***{title}***{T}.
/// Note that more stars the user rated the movie, the more the user liked the movie.
/// You should ONLY tell me yes or no.
/// </code>
/// <para>She/Her when the profile's <see cref="UserProfile.Gender"/> is <c>female</c>, he/His otherwise (the reference's
/// rule). <see cref="PromptStyle.MoviesWithoutProfile"/> (ML-25M; <c>load_prompt_ml25m.py</c>):</para>
/// <code>
/// The user watched the following movies in the past, and rated them:
/// {history}
/// Based on the movies the user has watched, deduce if the user will like the movie ***{title}***{T}.
/// Note that more stars the user rated the movie, the more the user liked the movie.
/// You should ONLY tell me yes or no.
/// </code>
/// <para><see cref="PromptStyle.BooksWithProfile"/> (Book-Crossing; <c>load_prompt_BookCrossing.py</c>):</para>
/// <code>
/// The user's location is {location}. The user's age is {age}.
/// The user read the following books in the past, and rated them:
/// {history}
/// Based on the books the user has read, deduce if the user will like the book ***{title}***{T}.
/// Note that more stars the user rated the book, the more the user liked the book.
/// You should ONLY tell me yes or no.
/// </code>
/// <para><see cref="PromptStyle.BooksWithoutProfile"/> (GoodReads; the reference has no GoodReads prompt): the
/// Book-Crossing template without its first line. A profile field that is null for a user is printed
/// <c>unknown</c>.</para>
/// <para><b>Where we differ from the reference code, and why.</b> (1) The <c>Note</c> line follows SPEC §1
/// (<c>the more the user liked the movie</c>); the reference's <c>simple</c> templates say <c>the user liked the movie
/// more</c> (ML-1M's <c>sequential</c>/<c>high</c>/<c>low</c> say what SPEC says), and its shipped ML-1M data files say
/// <c>the user like the movie more</c>. (2) Book-Crossing's second line: the reference writes <c>in the past and rated
/// them:</c> without the comma; SPEC §1 defines the book wording as the movie wording with read/books/book, which gives
/// <c>in the past, and rated them:</c> (ML-25M's line), so both book styles read the same. (3) SPA markers: the
/// ReLLaX reference (<c>dataset_new.py</c>, <c>insert_placeholder</c>) inserts <c>" [hist]"</c> and
/// <c>" [target]"</c> with a space, the target one before the final period; we follow SPEC §3:
/// <c>(4 stars)[hist]</c> and <c>***title***[target]</c>, no space. (4) Ratings: the reference prints the rating as
/// Python prints its number (<c>4.0</c> for a float column); we print integers without a decimal point.</para>
/// <para><b>The history list.</b> Each listed event becomes <c>"{i}. {title} ({rating} stars)"</c>, with <c>star</c>
/// when the rating is 1 or less (the reference's <c>" stars)" if star &gt; 1 else " star)"</c>), <c>i</c> = 0, 1, ... in
/// prompt order, the rating printed as the shortest round-trip decimal (<c>4</c>, <c>3.5</c>, Book-Crossing's <c>0</c> to
/// <c>10</c>), and, with SPA markers, the history marker right after the closing parenthesis inside the string
/// (<c>'0. Heat (1995) (4 stars)[hist]'</c>). The strings are written as Python's <c>str(list)</c> writes them:
/// <c>[</c>, each <c>repr(s)</c> (see <see cref="PythonText.AppendRepr"/>: <c>'...'</c>, or <c>"..."</c> for a title
/// with <c>'</c> and no <c>"</c>), separated by <c>", "</c>, then <c>]</c>; an empty list is <c>[]</c>.</para>
/// </summary>
public sealed class ReLLaPromptBuilder
{
    private const string Unknown = "unknown";
    private readonly Wording _w;

    /// <summary>Creates a builder for <paramref name="samples"/>; the style follows the dataset (domain and profile fields).</summary>
    public ReLLaPromptBuilder(SampleSet samples, PromptOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(samples);
        Samples = samples;
        Options = options ?? new PromptOptions();
        if (Options.SpaMarkers)
        {
            ArgumentException.ThrowIfNullOrEmpty(Options.HistToken, "options.HistToken");
            ArgumentException.ThrowIfNullOrEmpty(Options.TargetToken, "options.TargetToken");
        }
        Style = StyleOf(samples.Dataset);
        _w = Style is PromptStyle.MoviesWithProfile or PromptStyle.MoviesWithoutProfile ? Wording.Movies : Wording.Books;
    }

    /// <summary>The samples prompts are built for.</summary>
    public SampleSet Samples { get; }

    /// <summary>The rendering options.</summary>
    public PromptOptions Options { get; }

    /// <summary>The wording, chosen from the dataset.</summary>
    public PromptStyle Style { get; }

    /// <summary>The wording a dataset gets: movies or books by <see cref="RatingDataset.Domain"/>, with a profile when
    /// <see cref="RatingDataset.Profiles"/> is not null (movies: gender, job, age; books: location, age).</summary>
    public static PromptStyle StyleOf(RatingDataset dataset)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        bool profile = dataset.Profiles is not null;
        return dataset.Domain switch
        {
            ItemDomain.Movies => profile ? PromptStyle.MoviesWithProfile : PromptStyle.MoviesWithoutProfile,
            ItemDomain.Books => profile ? PromptStyle.BooksWithProfile : PromptStyle.BooksWithoutProfile,
            _ => throw new ArgumentOutOfRangeException(nameof(dataset), dataset.Domain, $"dataset {dataset.Name}: unknown item domain"),
        };
    }

    /// <summary>The prompt of <paramref name="sample"/> listing the history events at <paramref name="historyPositions"/>
    /// (indices into <see cref="SampleSet.History"/>, in prompt order; numbered 0, 1, ... in that order).</summary>
    /// <param name="sample">A sample of <see cref="Samples"/>.</param>
    /// <param name="historyPositions">Distinct positions in [0, <see cref="ReLLaSample.HistoryLength"/>); may be empty.</param>
    /// <exception cref="ArgumentOutOfRangeException">A position outside the sample's history (the message names the
    /// index in <paramref name="historyPositions"/>, the value and the history length).</exception>
    /// <exception cref="ArgumentException">A position listed twice, or a sample that is not <see cref="Samples"/>' sample
    /// of its <see cref="ReLLaSample.Index"/>.</exception>
    public ReLLaPrompt Build(in ReLLaSample sample, ReadOnlySpan<int> historyPositions)
    {
        var all = Samples.Samples;
        if ((uint)sample.Index >= (uint)all.Count || !all[sample.Index].Equals(sample))
            throw new ArgumentException($"sample {sample.Index} (user {sample.User}, item {sample.Item}) is not sample {sample.Index} of this builder's sample set", nameof(sample));
        var history = Samples.History(sample);
        CheckPositions(historyPositions, history.Length, sample.Index);

        var dataset = Samples.Dataset;
        var items = new int[historyPositions.Length];
        var sb = new StringBuilder(320 + 64 * historyPositions.Length);
        string subject = AppendIntro(sb, sample.User);

        sb.Append('[');
        var entry = new StringBuilder(96);
        for (int i = 0; i < historyPositions.Length; i++)
        {
            var r = history[historyPositions[i]];
            items[i] = r.Item;
            entry.Clear()
                .Append(i.ToString(CultureInfo.InvariantCulture)).Append(". ")
                .Append(dataset.Items[r.Item].Title).Append(" (")
                .Append(FormatRating(r.Value)).Append(r.Value > 1 ? " stars)" : " star)");
            if (Options.SpaMarkers) entry.Append(Options.HistToken);
            if (i > 0) sb.Append(", ");
            PythonText.AppendRepr(sb, entry.ToString());
        }
        sb.Append("]\n");

        sb.Append("Based on the ").Append(_w.Plural).Append(' ').Append(subject).Append(" has ").Append(_w.Verb)
            .Append(", deduce if ").Append(subject).Append(" will like the ").Append(_w.Singular)
            .Append(" ***").Append(dataset.Items[sample.Item].Title).Append("***");
        if (Options.SpaMarkers) sb.Append(Options.TargetToken);
        sb.Append(".\nNote that more stars the user rated the ").Append(_w.Singular).Append(", the more the user liked the ")
            .Append(_w.Singular).Append(".\nYou should ONLY tell me yes or no.");
        return new ReLLaPrompt(sb.ToString(), items, sample.Item, sample.Label);
    }

    /// <summary>The recent-K prompt of <paramref name="sample"/>: <see cref="Build"/> over
    /// <see cref="RecentPositions"/>(<see cref="ReLLaSample.HistoryLength"/>, <paramref name="k"/>).</summary>
    public ReLLaPrompt BuildRecent(in ReLLaSample sample, int k) => Build(sample, RecentPositions(sample.HistoryLength, k));

    /// <summary>Recent-K (the reference code's <c>simple</c> template): the last <paramref name="k"/> positions of a history
    /// of <paramref name="historyLength"/> events, oldest first (all of them when the history is shorter).</summary>
    public static int[] RecentPositions(int historyLength, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(historyLength);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        int n = Math.Min(historyLength, k);
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = historyLength - n + i;
        return p;
    }

    /// <summary>The rating as the prompt prints it: the shortest decimal that round-trips the float (<c>4</c>, <c>3.5</c>,
    /// <c>10</c>), invariant culture.</summary>
    internal static string FormatRating(float value) => value.ToString(CultureInfo.InvariantCulture);

    // Appends the lines before the history list and returns the subject of the "Based on" line: he, she or "the user".
    private string AppendIntro(StringBuilder sb, int user)
    {
        var profile = Samples.Dataset.Profiles?[user];
        switch (Style)
        {
            case PromptStyle.MoviesWithProfile:
            {
                bool female = profile!.Gender == "female";
                string his = female ? "Her" : "His";
                sb.Append("The user is a ").Append(profile.Gender ?? Unknown).Append(". ")
                    .Append(his).Append(" job is ").Append(profile.Job ?? Unknown).Append(". ")
                    .Append(his).Append(" age is ").Append(profile.Age ?? Unknown).Append(".\n")
                    .Append(female ? "She" : "He").Append(" watched the following movies in order in the past, and rated them:\n");
                return female ? "she" : "he";
            }
            case PromptStyle.BooksWithProfile:
                sb.Append("The user's location is ").Append(profile!.Location ?? Unknown).Append(". The user's age is ")
                    .Append(profile.Age ?? Unknown).Append(".\n");
                break;
        }
        sb.Append("The user ").Append(_w.Verb).Append(" the following ").Append(_w.Plural).Append(" in the past, and rated them:\n");
        return "the user";
    }

    private static void CheckPositions(ReadOnlySpan<int> positions, int historyLength, int sampleIndex)
    {
        for (int i = 0; i < positions.Length; i++)
        {
            int p = positions[i];
            if ((uint)p >= (uint)historyLength)
                throw new ArgumentOutOfRangeException("historyPositions", p,
                    $"historyPositions[{i}] = {p} is outside sample {sampleIndex}'s history of {historyLength} events (valid: 0 to {historyLength - 1})");
        }
        if (positions.Length < 2) return;
        var sorted = positions.ToArray();
        Array.Sort(sorted);
        for (int i = 1; i < sorted.Length; i++)
            if (sorted[i] == sorted[i - 1])
                throw new ArgumentException($"historyPositions lists position {sorted[i]} of sample {sampleIndex}'s history twice", "historyPositions");
    }

    private sealed record Wording(string Verb, string Plural, string Singular)
    {
        public static readonly Wording Movies = new("watched", "movies", "movie");
        public static readonly Wording Books = new("read", "books", "book");
    }
}

/// <summary>
/// SUBR's item sentences (SPEC §2, step 1), worded as the reference code's <c>get_semantic_embed.py</c> words them.
/// Movies: <c>Here is a movie. Its title is {title}. The movie's genre is {first genre}.</c> Books: <c>Here is a book. Its
/// title is {title}. ISBN of the book is {isbn}. The author of the book is {author}. The publication year of the book is
/// {year}. Its publisher is {publisher}.</c> A field the item lacks is written as <c>unknown</c>; a movie with no genre
/// gets <c>The movie's genre is unknown.</c>
/// </summary>
public static class ItemText
{
    /// <summary>One sentence describing <paramref name="item"/>, e.g. <c>Here is a movie. Its title is Toy Story (1995). The movie's genre is Animation.</c></summary>
    public static string Describe(Item item, ItemDomain domain)
    {
        ArgumentNullException.ThrowIfNull(item);
        return domain switch
        {
            ItemDomain.Movies => $"Here is a movie. Its title is {item.Title}. The movie's genre is {(item.Genres.Count > 0 ? item.Genres[0] : Unknown)}.",
            ItemDomain.Books => $"Here is a book. Its title is {item.Title}. ISBN of the book is {item.Isbn ?? Unknown}. " +
                $"The author of the book is {item.Author ?? Unknown}. The publication year of the book is {item.Year ?? Unknown}. " +
                $"Its publisher is {item.Publisher ?? Unknown}.",
            _ => throw new ArgumentOutOfRangeException(nameof(domain), domain, "unknown item domain"),
        };
    }

    private const string Unknown = "unknown";
}
