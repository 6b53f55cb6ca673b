using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Rellax.Rec;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax prepare</c>: reads a public rating dataset (<see cref="DatasetReader"/>), builds its ReLLa samples
/// (<see cref="ReLLaSamples"/>, SPEC §1) and writes the prepared-dataset folder (<see cref="PreparedDataset"/>) that
/// <c>rellax embed</c> (its <c>items.jsonl</c>) and <c>rellax eval</c> read.
/// </summary>
internal static class PrepareCommand
{
    private const string Description = """
        Prepare ReLLa samples from a public rating dataset's original files.

        MovieLens (time-ordered): every rating is a sample whose history is the user's earlier ratings in the global
        (timestamp, user, item) order; samples with fewer than --min-history history items are dropped; the rest is split
        8:1:1 in that order (train = floor(0.8 N), valid = floor(0.1 N), test = the rest). Label: rating > 3.
        Book-Crossing and GoodReads (no timestamps): users with more than --min-history ratings; each user's ratings are
        shuffled with --seed (as the reference notebook does; --hold-out last keeps file order) and the last one is held
        out as the target; users are shuffled with --seed and split 90/10. Label: Book-Crossing rating >= 5, GoodReads > 3.

        Output folder (written atomically; an earlier prepared folder is replaced, any other non-empty folder refused):
          dataset.json     manifest: dataset, protocol, options, counts per split
          items.jsonl      {"id", "key", "title", "genres", ..., "text"}: `rellax embed --items` reads it as is
          users.jsonl      {"id", "key", profile fields}
          timelines.jsonl  one line per user: {"user", "items", "ratings", "timestamps", "rows"} in history order
          samples.jsonl    {"id", "split", "user", "item", "rating", "label", "timestamp", "history"}: the history is the
                           first "history" events of the user's timeline

        Examples:
          rellax prepare --dataset movielens-100k --data ml-100k --output ml100k-prepared
          rellax prepare --dataset movielens-1m --data ml-1m --output ml1m --limit 10000 --json
          rellax prepare --dataset bookcrossing --data BX-CSV-Dump --output bx --skip-bad-lines
          rellax embed --items ml100k-prepared/items.jsonl --output ml100k-items.safetensors --pca 512
        """;

    /// <summary>How many skipped lines are shown (the count covers all of them).</summary>
    private const int SkippedShown = 5;

    public static Command Create()
    {
        var dataset = new Option<string>("--dataset")
        {
            HelpName = string.Join("|", DatasetReader.Names),
            Description = "Which dataset the --data folder holds.",
            Required = true,
        };
        var data = new Option<string>("--data") { HelpName = "DIR", Description = "The dataset's folder, as unpacked from its archive.", Required = true };
        var output = new Option<string>("--output") { HelpName = "DIR", Description = "The prepared-dataset folder to write (its parent must exist).", Required = true };
        var minHistory = CommonOptions.Int("--min-history", 0, 100_000, "Drop samples with fewer history items (SPEC: 5).", 5);
        var limit = CommonOptions.Int("--limit", 0, int.MaxValue, "Keep only the first N samples in global order, after the split (0: all).", 0);
        var seed = CommonOptions.Seed(42, "Seed of the hold-out protocol's shuffles (Python's random.seed; the reference uses 42).");
        var holdOut = CommonOptions.Choice("--hold-out",
            "Hold-out datasets: shuffle each user's ratings with --seed before holding out the last (the reference), or hold out the last in file order.",
            "shuffle", "shuffle", "last");
        var skip = new Option<bool>("--skip-bad-lines") { Description = "Skip malformed lines (counted and reported) instead of failing at the first one." };
        var json = CommonOptions.Json();
        var cmd = new Command("prepare", Description) { dataset, data, output, minHistory, limit, seed, holdOut, skip, json };
        cmd.SetAction(r => CommonOptions.Guard(cancel => Run(r.GetValue(dataset)!, r.GetValue(data)!, r.GetValue(output)!, r.GetValue(minHistory),
            r.GetValue(limit), r.GetValue(seed), r.GetValue(holdOut) != "last", r.GetValue(skip), r.GetValue(json), cancel)));
        return cmd;
    }

    private static int Run(string datasetName, string dataDir, string outputDir, int minHistory, int limit, int seed, bool shuffleHoldOut,
        bool skipBadLines, bool json, CancellationToken cancel)
    {
        if (!DatasetReader.Names.Contains(datasetName, StringComparer.OrdinalIgnoreCase))
            throw new ArgumentException($"--dataset: unknown dataset '{datasetName}'; expected one of {string.Join(", ", DatasetReader.Names)}");
        var kind = DatasetReader.ParseKind(datasetName);
        CliPaths.RequireDirectory(dataDir, "--data folder");
        PreparedDataset.CheckTarget(outputDir, dataDir);
        bool interactive = !Console.IsErrorRedirected;
        void Stage(string text) { if (interactive) Console.Error.WriteLine(text); }

        var skipped = new List<string>();
        var readOptions = new DatasetReadOptions
        {
            SkipBadLines = skipBadLines,
            SkippedExamples = m => { if (skipped.Count < SkippedShown) skipped.Add(m); },
        };
        var clock = Stopwatch.StartNew();
        Stage($"reading {DatasetReader.NameOf(kind)} from {dataDir} ...");
        var ratings = DatasetReader.Read(kind, dataDir, readOptions);
        double readMs = clock.Elapsed.TotalMilliseconds;
        foreach (var m in skipped) Console.Error.WriteLine($"rellax: skipped {m}");
        if (ratings.SkippedLines > skipped.Count) Console.Error.WriteLine($"rellax: ... and {ratings.SkippedLines - skipped.Count} more skipped lines");

        cancel.ThrowIfCancellationRequested();
        Stage($"building samples from {ratings.Ratings.Length} ratings ...");
        clock.Restart();
        var defaults = ratings.HasTimestamps ? new SampleOptions() : SampleOptions.HoldOutDefaults;
        var options = defaults with { MinHistory = minHistory, Limit = limit, Seed = seed, ShuffleHoldOut = shuffleHoldOut };
        var samples = ReLLaSamples.Build(ratings, options);
        double buildMs = clock.Elapsed.TotalMilliseconds;

        int train = samples.CountOf(SampleSplit.Train), valid = samples.CountOf(SampleSplit.Valid), test = samples.CountOf(SampleSplit.Test);
        var empty = new[] { ("train", train), ("valid", valid), ("test", test) }.Where(c => c.Item2 == 0).Select(c => c.Item1).ToList();
        // --limit asks for a smaller dataset, not for a missing split: say when it left one empty.
        if (limit > 0 && empty.Count > 0)
            PipelineReport.Warn($"--limit {limit} leaves the {string.Join(" and ", empty)} split{(empty.Count > 1 ? "s" : "")} empty " +
                $"({samples.Samples.Count} samples: train {train}, valid {valid}, test {test}); a larger --limit fills every split");
        cancel.ThrowIfCancellationRequested();
        Stage($"writing {samples.Samples.Count} samples to {outputDir} ...");
        clock.Restart();
        PreparedDataset.Save(samples, outputDir, cancel);
        double writeMs = clock.Elapsed.TotalMilliseconds;

        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                dataset = DatasetReader.NameOf(kind), data = dataDir, output = outputDir,
                protocol = ratings.HasTimestamps ? "time-ordered" : "hold-out",
                items = ratings.Items.Count, users = ratings.UserKeys.Count, ratings = ratings.Ratings.Length, skipped_lines = ratings.SkippedLines,
                filtered_ratings = ratings.FilteredRatings,
                samples = new { total = samples.Samples.Count, train, valid, test },
                min_history = minHistory, limit, seed, hold_out = ratings.HasTimestamps ? null : shuffleHoldOut ? "shuffle" : "last",
                read_ms = Math.Round(readMs, 3), build_ms = Math.Round(buildMs, 3), write_ms = Math.Round(writeMs, 3),
            }));
        else
            Console.Error.WriteLine($"{DatasetReader.NameOf(kind)}: {ratings.Ratings.Length} ratings, {ratings.UserKeys.Count} users, {ratings.Items.Count} items" +
                $" ({ratings.SkippedLines} lines skipped" + (ratings.FilteredRatings > 0 ? $", {ratings.FilteredRatings} ratings of unknown users or items left out as the reference does" : "") +
                $"); {samples.Samples.Count} samples: train {train}, valid {valid}, test {test}" +
                $" (min history {minHistory}{(limit > 0 ? $", limit {limit}" : "")}); read {readMs:F0} ms, build {buildMs:F0} ms, write {writeMs:F0} ms → {outputDir}");
        return 0;
    }
}
