using System.Globalization;

namespace Rellax.Rec;

/// <summary>The shape of a <see cref="SyntheticDataset"/>.</summary>
public sealed record SyntheticDatasetOptions
{
    /// <summary>Number of users.</summary>
    public int Users { get; init; } = 48;

    /// <summary>Items per category (at most <see cref="SyntheticDataset.MaxItemsPerCategory"/>).</summary>
    public int ItemsPerCategory { get; init; } = 16;

    /// <summary>Number of categories (genres), 2 to <see cref="SyntheticDataset.CategoryNames"/>.Count.</summary>
    public int Categories { get; init; } = 6;

    /// <summary>Fewest ratings per user.</summary>
    public int MinRatingsPerUser { get; init; } = 24;

    /// <summary>Most ratings per user (at most the number of items).</summary>
    public int MaxRatingsPerUser { get; init; } = 44;

    /// <summary>Chance that a rating event picks one of the user's two favourite categories.</summary>
    public double FavouriteShare { get; init; } = 0.7;

    /// <summary>Share of items that are flops (everyone rates them about 1.6 stars lower) and, as many again, hits (about
    /// 0.9 stars higher): a collaborative signal that only other users' ratings of the same item reveal (DIN's item
    /// embedding, SPA's soft token), not the title. 0 to 0.5.</summary>
    public double QualityShare { get; init; } = 0.2;

    /// <summary>Standard deviation, in stars, of the Gaussian noise added to each rating before rounding (0: none).</summary>
    public double RatingNoise { get; init; } = 0.7;

    /// <summary>The seed: the same options always give the same dataset.</summary>
    public int Seed { get; init; } = 7;
}

/// <summary>
/// A small MovieLens-shaped behaviour dataset generated in code (the demo's data): users with latent tastes over item
/// categories, so that retrieval by meaning has structure to find.
/// </summary>
/// <remarks>
/// Each item belongs to one category (its only genre) and has a title of simple words from that category
/// (<c>The Brave Bear (1997)</c>); a seeded share of items are flops or hits
/// (<see cref="SyntheticDatasetOptions.QualityShare"/>). Each user has two favourite categories; each rating event picks
/// a favourite category with probability <see cref="SyntheticDatasetOptions.FavouriteShare"/> (otherwise any category),
/// then an unrated item of it. The stars are round(4.4 for a favourite category, else 1.9; −1.6 for a flop, +0.9 for a
/// hit; plus Gaussian noise of <see cref="SyntheticDatasetOptions.RatingNoise"/>), clamped to 1..5, so labels
/// (rating &gt; 3) follow the taste by category (what SUBR surfaces: the user's stars for items like the target) and the
/// item's quality (what DIN and SPA carry: other users' stars for the same item).
/// Users start at different times and rate every few hours, so their events interleave in global time order (what the
/// ReLLa split uses). Profiles are random (gender, an ML-1M age bucket, a job). Deterministic for a seed.
/// </remarks>
public static class SyntheticDataset
{
    /// <summary>The category names, in order; the first <see cref="SyntheticDatasetOptions.Categories"/> are used.</summary>
    public static IReadOnlyList<string> CategoryNames { get; } = ["Animals", "Toys", "Food", "Sky", "Sea", "Garden", "Music", "Home"];

    /// <summary>The most items one category can have (distinct titles).</summary>
    public const int MaxItemsPerCategory = 96;

    private static readonly string[][] Nouns =
    [
        ["Cat", "Dog", "Bird", "Frog", "Bear", "Duck", "Bunny", "Horse"],
        ["Ball", "Doll", "Kite", "Train", "Robot", "Drum", "Truck", "Puzzle"],
        ["Cake", "Pie", "Apple", "Soup", "Cookie", "Candy", "Bread", "Pizza"],
        ["Sun", "Moon", "Star", "Cloud", "Rain", "Wind", "Rainbow", "Snow"],
        ["Boat", "Wave", "Shell", "Crab", "Ship", "Beach", "Whale", "Fish"],
        ["Tree", "Flower", "Leaf", "Seed", "Rose", "Bee", "Grass", "Bush"],
        ["Song", "Piano", "Flute", "Band", "Dance", "Bell", "Horn", "Choir"],
        ["Bed", "Door", "Chair", "Lamp", "Cup", "Window", "Table", "Clock"],
    ];

    private static readonly string[] Adjectives = ["Big", "Little", "Happy", "Red", "Brave", "Silly", "Magic", "Lost", "Sleepy", "Funny", "Secret", "Golden"];
    private static readonly string[] Ages = ["Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"];
    private static readonly string[] Jobs = ["teacher", "student", "artist", "doctor", "farmer", "writer", "engineer", "lawyer", "retired", "programmer"];

    private const double FavouriteStars = 4.4, OtherStars = 1.9, FlopShift = -1.6, HitShift = 0.9;

    /// <summary>A standard normal draw (Box-Muller).</summary>
    private static double Gaussian(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    /// <summary>Generates the dataset.</summary>
    /// <exception cref="ArgumentException">An option out of range (named).</exception>
    public static RatingDataset Create(SyntheticDatasetOptions? options = null)
    {
        var o = options ?? new SyntheticDatasetOptions();
        if (o.Users < 1) throw new ArgumentException($"Users must be >= 1, got {o.Users}", nameof(options));
        if (o.Categories < 2 || o.Categories > CategoryNames.Count)
            throw new ArgumentException($"Categories must be in [2, {CategoryNames.Count}], got {o.Categories}", nameof(options));
        if (o.ItemsPerCategory < 1 || o.ItemsPerCategory > MaxItemsPerCategory)
            throw new ArgumentException($"ItemsPerCategory must be in [1, {MaxItemsPerCategory}], got {o.ItemsPerCategory}", nameof(options));
        int itemCount = o.Categories * o.ItemsPerCategory;
        if (o.MinRatingsPerUser < 1 || o.MaxRatingsPerUser < o.MinRatingsPerUser || o.MaxRatingsPerUser > itemCount)
            throw new ArgumentException($"ratings per user must satisfy 1 <= min <= max <= items ({itemCount}), got [{o.MinRatingsPerUser}, {o.MaxRatingsPerUser}]", nameof(options));
        if (!(o.FavouriteShare is >= 0 and <= 1)) throw new ArgumentException($"FavouriteShare must be in [0, 1], got {o.FavouriteShare}", nameof(options));
        if (!(o.QualityShare is >= 0 and <= 0.5)) throw new ArgumentException($"QualityShare must be in [0, 0.5], got {o.QualityShare}", nameof(options));
        if (!(o.RatingNoise is >= 0 and <= 10)) throw new ArgumentException($"RatingNoise must be in [0, 10], got {o.RatingNoise}", nameof(options));

        var rng = new Random(o.Seed);
        var items = new List<Item>(itemCount);
        var byCategory = new int[o.Categories][];
        for (int c = 0; c < o.Categories; c++)
        {
            // Distinct (adjective, noun) pairs of the category, in a seeded order.
            var pairs = (from a in Adjectives from n in Nouns[c] select (a, n)).ToArray();
            rng.Shuffle(pairs);
            byCategory[c] = new int[o.ItemsPerCategory];
            for (int i = 0; i < o.ItemsPerCategory; i++)
            {
                var (adjective, noun) = pairs[i];
                int year = 1985 + rng.Next(30);
                byCategory[c][i] = items.Count;
                items.Add(new Item((items.Count + 1).ToString(CultureInfo.InvariantCulture), $"The {adjective} {noun} ({year})", [CategoryNames[c]]));
            }
        }

        // Item quality, drawn after the titles so that the titles of a seed do not depend on QualityShare.
        var quality = new double[itemCount];
        for (int i = 0; i < itemCount; i++)
        {
            double x = rng.NextDouble();
            quality[i] = x < o.QualityShare ? FlopShift : x < 2 * o.QualityShare ? HitShift : 0;
        }

        var userKeys = new string[o.Users];
        var profiles = new UserProfile[o.Users];
        var ratings = new List<Rating>();
        const long Epoch = 946_684_800; // 2000-01-01, seconds
        for (int u = 0; u < o.Users; u++)
        {
            userKeys[u] = (u + 1).ToString(CultureInfo.InvariantCulture);
            profiles[u] = new UserProfile(rng.Next(2) == 0 ? "male" : "female", Ages[rng.Next(Ages.Length)], Jobs[rng.Next(Jobs.Length)]);
            int first = rng.Next(o.Categories);
            int second = (first + 1 + rng.Next(o.Categories - 1)) % o.Categories;
            var rated = new HashSet<int>();
            int count = o.MinRatingsPerUser + rng.Next(o.MaxRatingsPerUser - o.MinRatingsPerUser + 1);
            long time = Epoch + rng.Next(30 * 24 * 3600);
            while (rated.Count < count)
            {
                int c = rng.NextDouble() < o.FavouriteShare ? (rng.Next(2) == 0 ? first : second) : rng.Next(o.Categories);
                var pool = byCategory[c].Where(i => !rated.Contains(i)).ToArray();
                if (pool.Length == 0)
                {
                    // The drawn category is used up: another open category of the same kind (favourite or not) when there is
                    // one, else any open category, so that generation always ends (count <= items) without redrawing forever.
                    bool wantFavourite = c == first || c == second;
                    var open = Enumerable.Range(0, o.Categories).Where(cc => byCategory[cc].Any(i => !rated.Contains(i))).ToArray();
                    var sameKind = open.Where(cc => (cc == first || cc == second) == wantFavourite).ToArray();
                    c = sameKind.Length > 0 ? sameKind[rng.Next(sameKind.Length)] : open[rng.Next(open.Length)];
                    pool = byCategory[c].Where(i => !rated.Contains(i)).ToArray();
                }
                int item = pool[rng.Next(pool.Length)];
                rated.Add(item);
                bool favourite = c == first || c == second;
                double mean = (favourite ? FavouriteStars : OtherStars) + quality[item];
                int stars = (int)Math.Clamp(Math.Round(mean + o.RatingNoise * Gaussian(rng)), 1, 5);
                time += 600 + rng.Next(6 * 3600);
                ratings.Add(new Rating(u, item, stars, time));
            }
        }
        return new RatingDataset("synthetic", DatasetKind.Custom, ItemDomain.Movies, items, userKeys, profiles, [.. ratings],
            hasTimestamps: true, labelThreshold: 3);
    }
}
