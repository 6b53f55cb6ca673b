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
/// appear and in what order (recent-K: <see cref="RecentPositions"/>; SUBR-K: the positions <see cref="SubrIndex.Retrieve"/>
/// returns, chronological or by score). PLACEHOLDER (prompts helper).
/// </summary>
public sealed class ReLLaPromptBuilder
{
    /// <summary>Creates a builder for <paramref name="samples"/>; the style follows the dataset (domain and profile fields).</summary>
    public ReLLaPromptBuilder(SampleSet samples, PromptOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(samples);
        Samples = samples;
        Options = options ?? new PromptOptions();
        Style = StyleOf(samples.Dataset);
    }

    /// <summary>The samples prompts are built for.</summary>
    public SampleSet Samples { get; }

    /// <summary>The rendering options.</summary>
    public PromptOptions Options { get; }

    /// <summary>The wording, chosen from the dataset.</summary>
    public PromptStyle Style { get; }

    /// <summary>The wording a dataset gets: its domain, and whether it has profiles (with a location for books).</summary>
    public static PromptStyle StyleOf(RatingDataset dataset) => throw new NotImplementedException("PLACEHOLDER: StyleOf");

    /// <summary>The prompt of <paramref name="sample"/> listing the history events at <paramref name="historyPositions"/>
    /// (indices into <see cref="SampleSet.History"/>, in prompt order; numbered 0, 1, ... in that order).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A position outside the sample's history.</exception>
    public ReLLaPrompt Build(in ReLLaSample sample, ReadOnlySpan<int> historyPositions) => throw new NotImplementedException("PLACEHOLDER: Build");

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

/// <summary>Training files in the reference code's format: one <c>{"input": prompt, "output": "Yes."|"No."}</c> per line.
/// PLACEHOLDER (prompts helper).</summary>
public static class TrainingFile
{
    /// <summary>Writes one line for <paramref name="prompt"/>.</summary>
    public static void Write(TextWriter writer, ReLLaPrompt prompt) => throw new NotImplementedException("PLACEHOLDER: TrainingFile.Write");
}
