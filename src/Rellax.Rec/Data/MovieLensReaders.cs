using System.Globalization;
using System.Text;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>The MovieLens-1M and MovieLens-25M readers behind <see cref="DatasetReader.Read"/>.</summary>
internal static class MovieLensReaders
{
    // ---- MovieLens-1M ----------------------------------------------------------------------------------------------

    /// <summary>
    /// ML-1M age codes (README "Age is chosen from the following ranges") to the text the ReLLa prompts print. The
    /// strings are the reference preprocessing's <c>age_dict</c> (LaVieEnRose365/ReLLa,
    /// <c>data_preprocess/ml-1m.ipynb</c>), which differ from the README's in two places: <c>under 18</c> (README
    /// "Under 18") and <c>above 56</c> (README "56+").
    /// </summary>
    internal static readonly IReadOnlyDictionary<int, string> MovieLens1MAges = new Dictionary<int, string>
    {
        [1] = "under 18", [18] = "18-24", [25] = "25-34", [35] = "35-44", [45] = "45-49", [50] = "50-55", [56] = "above 56",
    };

    /// <summary>
    /// ML-1M occupation codes 0-20 to the text the ReLLa prompts print: the reference preprocessing's <c>job_dict</c>
    /// (<c>data_preprocess/ml-1m.ipynb</c>), the README's table with code 0 written <c>other or not specified</c>.
    /// </summary>
    internal static readonly string[] MovieLens1MJobs =
    [
        "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
        "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer", "retired",
        "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
    ];

    /// <summary>
    /// Reads ML-1M from <paramref name="directory"/>: <c>movies.dat</c> (<c>MovieID::Title::Genres</c>, genres
    /// <c>|</c>-separated), <c>users.dat</c> (<c>UserID::Gender::Age::Occupation::Zip-code</c>) and <c>ratings.dat</c>
    /// (<c>UserID::MovieID::Rating::Timestamp</c>), all ISO-8859-1. Items and users are numbered in file order; profiles
    /// carry gender (<c>male</c>/<c>female</c>), age and job as the prompts print them (<see cref="MovieLens1MAges"/>,
    /// <see cref="MovieLens1MJobs"/>); the zip code is not used. Titles are trimmed, as the reference
    /// does. Label: rating &gt; 3. Malformed lines: wrong field count, non-numeric or duplicate id, unknown gender / age /
    /// occupation code, rating outside 1-5, non-numeric timestamp, a rating of a user or movie not in the other files
    /// (the reference drops those silently; we report them, so nothing disappears unseen).
    /// </summary>
    public static RatingDataset Read1M(string directory, DatasetReadOptions options)
    {
        var bad = new BadLines(options);
        var latin1 = Encoding.Latin1;

        var items = new List<Item>();
        var itemRow = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (line, where) in DatasetReader.SourceLines(Path.Combine(directory, "movies.dat"), latin1))
        {
            var f = line.Split("::");
            if (f.Length != 3) { bad.Report(where, $"expected 3 '::'-separated fields (MovieID::Title::Genres), got {f.Length}"); continue; }
            if (!DatasetReader.IsId(f[0])) { bad.Report(where, $"movie id '{f[0]}' is not a positive integer"); continue; }
            string title = f[1].Trim();
            if (title.Length == 0) { bad.Report(where, $"movie {f[0]} has an empty title"); continue; }
            string[] genres = f[2].Length == 0 ? [] : f[2].Split('|');
            if (Array.IndexOf(genres, "") >= 0) { bad.Report(where, $"empty genre in '{f[2]}'"); continue; }
            if (!itemRow.TryAdd(f[0], items.Count)) { bad.Report(where, $"movie id {f[0]} appears twice"); continue; }
            items.Add(new Item(f[0], title, genres));
        }

        var userKeys = new List<string>();
        var profiles = new List<UserProfile>();
        var userRow = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (line, where) in DatasetReader.SourceLines(Path.Combine(directory, "users.dat"), latin1))
        {
            var f = line.Split("::");
            if (f.Length != 5) { bad.Report(where, $"expected 5 '::'-separated fields (UserID::Gender::Age::Occupation::Zip-code), got {f.Length}"); continue; }
            if (!DatasetReader.IsId(f[0])) { bad.Report(where, $"user id '{f[0]}' is not a positive integer"); continue; }
            string? gender = f[1] switch { "M" => "male", "F" => "female", _ => null };
            if (gender is null) { bad.Report(where, $"gender '{f[1]}' is not M or F"); continue; }
            if (!int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out int ageCode) || !MovieLens1MAges.TryGetValue(ageCode, out string? age))
            { bad.Report(where, $"age code '{f[2]}' is not one of 1, 18, 25, 35, 45, 50, 56"); continue; }
            if (!int.TryParse(f[3], NumberStyles.None, CultureInfo.InvariantCulture, out int jobCode) || jobCode >= MovieLens1MJobs.Length)
            { bad.Report(where, $"occupation code '{f[3]}' is not a whole number from 0 to {MovieLens1MJobs.Length - 1}"); continue; }
            if (!userRow.TryAdd(f[0], userKeys.Count)) { bad.Report(where, $"user id {f[0]} appears twice"); continue; }
            userKeys.Add(f[0]);
            profiles.Add(new UserProfile(gender, age, MovieLens1MJobs[jobCode]));
        }

        var ratings = new List<Rating>(1_000_209);
        foreach (var (line, where) in DatasetReader.SourceLines(Path.Combine(directory, "ratings.dat"), latin1))
        {
            var f = line.Split("::");
            if (f.Length != 4) { bad.Report(where, $"expected 4 '::'-separated fields (UserID::MovieID::Rating::Timestamp), got {f.Length}"); continue; }
            if (!userRow.TryGetValue(f[0], out int u)) { bad.Report(where, $"user id '{f[0]}' is not in users.dat"); continue; }
            if (!itemRow.TryGetValue(f[1], out int i)) { bad.Report(where, $"movie id '{f[1]}' is not in movies.dat"); continue; }
            if (!int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value is < 1 or > 5)
            { bad.Report(where, $"rating '{f[2]}' is not a whole number from 1 to 5"); continue; }
            if (!long.TryParse(f[3], NumberStyles.None, CultureInfo.InvariantCulture, out long time))
            { bad.Report(where, $"timestamp '{f[3]}' is not a whole number of seconds"); continue; }
            ratings.Add(new Rating(u, i, value, time));
        }
        return new RatingDataset("movielens-1m", DatasetKind.MovieLens1M, ItemDomain.Movies, items, userKeys, profiles,
            [.. ratings], hasTimestamps: true, labelThreshold: 3, skippedLines: bad.Count);
    }

    // ---- MovieLens-25M ---------------------------------------------------------------------------------------------

    /// <summary>The genre text ML-20M/25M write for a movie without genres; read as no genre.</summary>
    internal const string NoGenres = "(no genres listed)";

    /// <summary>
    /// Reads ML-25M (also ML-20M and the other CSV MovieLens releases) from <paramref name="directory"/>:
    /// <c>movies.csv</c> (<c>movieId,title,genres</c>) and <c>ratings.csv</c> (<c>userId,movieId,rating,timestamp</c>),
    /// RFC 4180 CSV in UTF-8 with a header whose column names are checked (any order; extra columns are ignored).
    /// Titles are kept as written (quoted titles may contain commas, doubled quotes and, as pandas reads them, line
    /// breaks); genres are <c>|</c>-separated
    /// and <c>(no genres listed)</c> is no genre. Ratings are multiples of 0.5 from 0.5 to 5.0. There are no user
    /// profiles; users are numbered in first-seen order in <c>ratings.csv</c>. Label: rating &gt; 3 (3.5 is positive).
    /// <para>
    /// Lean on purpose for 25 million ratings: the line count is taken first so the <see cref="Rating"/> array (24 bytes
    /// per rating, 600 MB for ML-25M) is allocated once; fields are spans into one buffer, ids are looked up by span,
    /// and nothing is allocated per rating except a string for each new user id.
    /// </para>
    /// </summary>
    public static RatingDataset Read25M(string directory, DatasetReadOptions options)
    {
        var bad = new BadLines(options);
        string moviesPath = Path.Combine(directory, "movies.csv");
        var items = new List<Item>();
        var itemRow = new KeyTable();
        using (var csv = new CsvRecordReader(moviesPath, Encoding.UTF8, multiline: true))
        {
            int[] col = DatasetCsv.ReadHeader(csv, "movieId", "title", "genres");
            int fields = csv.FieldCount;
            while (csv.Read())
            {
                if (csv.Error is not null) { bad.Report(csv.Location, $"{csv.Error}"); continue; }
                if (csv.FieldCount != fields) { bad.Report(csv.Location, $"expected {fields} fields, got {csv.FieldCount}"); continue; }
                var id = csv[col[0]];
                if (!DatasetCsv.IsId(id)) { bad.Report(csv.Location, $"movie id '{DatasetCsv.Show(id)}' is not a positive integer"); continue; }
                string title = csv.GetString(col[1]);
                if (string.IsNullOrWhiteSpace(title)) { bad.Report(csv.Location, $"movie {id} has an empty title"); continue; }
                var genreText = csv[col[2]];
                string[] genres = genreText.Length == 0 || genreText.SequenceEqual(NoGenres) ? [] : new string(genreText).Split('|');
                if (Array.IndexOf(genres, "") >= 0) { bad.Report(csv.Location, $"empty genre in '{genreText}'"); continue; }
                string key = new(id);
                if (!itemRow.TryAdd(key)) { bad.Report(csv.Location, $"movie id {key} appears twice"); continue; }
                items.Add(new Item(key, title, genres));
            }
        }

        string ratingsPath = Path.Combine(directory, "ratings.csv");
        var users = new KeyTable();
        Rating[] ratings;
        using (var csv = new CsvRecordReader(ratingsPath, Encoding.UTF8))
        {
            int capacity = DatasetCsv.RecordCapacity(ratingsPath);
            int[] col = DatasetCsv.ReadHeader(csv, "userId", "movieId", "rating", "timestamp");
            ratings = DatasetCsv.ReadRatings(csv, capacity, csv.FieldCount, col[0], col[1], col[2], col[3], users, addUsers: true, itemRow,
                new RatingScale(0.5f, 5f, HalfSteps: true), bad, "ratings.csv", "movies.csv", dropUnknown: false, out _);
        }
        return new RatingDataset("movielens-25m", DatasetKind.MovieLens25M, ItemDomain.Movies, items, users.Keys, profiles: null,
            ratings, hasTimestamps: true, labelThreshold: 3, skippedLines: bad.Count);
    }
}
