// What a recommendation service does with Rellax, through the public API of the NuGet packages only:
// load a model, embed the catalogue and build a SUBR index, retrieve each user's K most relevant past items for the
// item to rank, score the click prompts with a ReLLaX adapter, and fine-tune the adapter for a few steps.
//
//   dotnet pack -c Release                                     # once: fills the local feed artifacts/packages
//   dotnet run --project samples/Consumer -c Release -- [--model DIR]
//
// DIR is a Hugging Face Llama-family folder (config.json, model.safetensors, tokenizer.json); the default is the
// repository's embedded models/stories260K, found by walking up from the current folder. The run checks what it gets
// (finite probabilities, retrieval from each user's own history, a new adapter scoring as the base model, training
// changing the scores) and exits 1 with one line when a check fails, so CI catches a broken package.

using System.Diagnostics;
using System.Globalization;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Runtime.Training;

try
{
    return Run(ParseModel(args));
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or FormatException or NotSupportedException or InvalidOperationException)
{
    Console.Error.WriteLine($"consumer: {e.Message}");
    return 1;
}

static int Run(string modelDir)
{
    var clock = Stopwatch.StartNew();
    using var cancel = new CancellationTokenSource();
    Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };

    // 1. The backend and the model. Training runs on the CPU backend; scoring alone could take Backends.Create("auto").
    using ComputeBackend backend = Backends.Create("cpu");
    using var model = LlamaModel.Load(modelDir, backend);
    Console.WriteLine($"model {model.Config.Architecture}: {model.Config.NumHiddenLayers} layers, hidden {model.Config.HiddenSize}, " +
                      $"{model.WeightBytes:N0} weight bytes, on {backend.Name}");

    // 2. The catalogue, embedded by the LLM, and a SUBR index over it (centred, as the rellax pipeline does).
    CatalogueItem[] catalogue =
    [
        new(101, "The Dark Castle", "horror"), new(102, "Night of the Wolf", "horror"), new(103, "The Haunted Lake", "horror"),
        new(104, "Ghost Train", "horror"), new(105, "The Last Scream", "horror"), new(106, "Shadows Below", "horror"),
        new(201, "Sunny Day Out", "comedy"), new(202, "The Funny Cat", "comedy"), new(203, "Party at Tim's", "comedy"),
        new(204, "Silly Sam", "comedy"), new(205, "The Big Laugh", "comedy"), new(206, "Two Clowns", "comedy"),
    ];
    var byId = catalogue.ToDictionary(i => i.Id);
    using var embedder = new ItemEmbedder(model, PromptTemplate.None);
    float[] vectors = embedder.Embed(catalogue.Select(i => $"{i.Title}, a {i.Genre} movie").ToArray(), cancellationToken: cancel.Token);
    using var index = SubrIndex.Build(backend, vectors, catalogue.Length, embedder.Dimension,
        catalogue.Select(i => i.Id).ToArray(), new SubrIndexOptions { Center = true });
    Console.WriteLine($"index: {index.Count} items x {index.Dim} dims");

    // 3. Users (histories, oldest first) and the item to rank for each: retrieve the K past items most like the target.
    const int k = 3;
    SubrSample[] users =
    [
        new("ann", [101, 201, 102, 202, 103, 104], 105),
        new("bob", [201, 202, 101, 203, 204], 205),
        new("cid", [102, 206, 103], 106),
        new("dee", [205], 203),
    ];
    SubrResult top = index.Retrieve(users, k);
    var prompts = new List<CtrRequest>();
    for (int u = 0; u < users.Length; u++)
    {
        var history = users[u].History;
        var chosen = new List<CatalogueItem>();
        foreach (int position in top.PositionsOf(u)) chosen.Add(byId[history[position]]);
        Check(chosen.Count == Math.Min(k, history.Length), $"user {users[u].Id}: {chosen.Count} items retrieved, expected {Math.Min(k, history.Length)}");
        Console.WriteLine($"user {users[u].Id}: target \"{byId[users[u].Target].Title}\", SUBR-{k}: {string.Join("; ", chosen.Select(i => i.Title))}");
        prompts.Add(new CtrRequest(Prompt(chosen, byId[users[u].Target])));
    }

    // 4. Score the prompts with an adapter. A new adapter (LoRA B = 0) scores exactly as the base model.
    var scoring = new ScoringOptions { Template = PromptTemplate.None, BatchSize = 4 };
    var adapter = AdapterInit.Create(model.Config, new AdapterInitOptions { Rank = 4, Alpha = 8, Seed = 7 });
    CtrScore[] baseScores, before;
    using (var baseScorer = new CtrScorer(model, null, scoring)) baseScores = baseScorer.Score(prompts, cancellationToken: cancel.Token);
    using (var scorer = new CtrScorer(model, adapter, scoring)) before = scorer.Score(prompts, cancellationToken: cancel.Token);
    for (int i = 0; i < prompts.Count; i++)
    {
        Check(double.IsFinite(before[i].PYes) && before[i].PYes > 0 && before[i].PYes < 1, $"prompt {i}: p_yes {before[i].PYes} is not a probability");
        Check(Math.Abs(before[i].PYes - baseScores[i].PYes) <= 1e-6, $"prompt {i}: a new adapter scores {before[i].PYes}, the base model {baseScores[i].PYes}");
    }

    // 5. Fine-tune the adapter for a few steps on labelled prompts (here: does the user like the target's genre?).
    var examples = new List<CtrExample>();
    foreach (var user in users)
    {
        var history = user.History.Select(id => byId[id]).ToArray();
        string liked = history.GroupBy(i => i.Genre).OrderByDescending(g => g.Count()).First().Key;
        foreach (var target in catalogue.Where(i => !user.History.Contains(i.Id)).Take(4))
            examples.Add(new CtrExample(new CtrRequest(Prompt(history.TakeLast(k), target)), target.Genre == liked ? 1 : 0));
    }
    var train = examples.Where((_, i) => i % 4 != 3).ToList();
    var valid = examples.Where((_, i) => i % 4 == 3).ToList(); // held out: the loop keeps the best validation's weights
    var training = new AdapterTrainingOptions { Scoring = scoring, Trainable = AdapterParts.Lora };
    using var trainer = new AdapterTrainer(model, adapter, train, valid, training);
    var loop = new TrainingLoop(trainer, new TrainingOptions { Epochs = 1, MaxSteps = 3, BatchSize = 4, LearningRate = 5e-3f, Seed = 1 });
    loop.StepCompleted += s => Console.WriteLine($"step {s.GlobalStep}: loss {s.Loss.ToString("F4", CultureInfo.InvariantCulture)}");
    TrainingResult result = loop.Run(cancellationToken: cancel.Token);
    var metrics = result.Epochs[^1].Valid;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"trained {result.Steps} steps on {train.Count} examples; valid ({valid.Count}) AUC {metrics?.Auc:F3}, LogLoss {metrics?.LogLoss:F4}"));
    Check(result.Steps == 3, $"the loop ran {result.Steps} steps, expected 3");

    var trained = trainer.ToAdapter("consumer-trained");
    CtrScore[] after;
    using (var scorer = new CtrScorer(model, trained, scoring)) after = scorer.Score(prompts, cancellationToken: cancel.Token);
    double change = prompts.Select((_, i) => Math.Abs(after[i].PYes - before[i].PYes)).Max();
    for (int i = 0; i < prompts.Count; i++)
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"user {users[i].Id}: p_yes {before[i].PYes:F4} -> {after[i].PYes:F4}"));
    Check(change > 0, "training did not change any score");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"consumer: OK in {clock.Elapsed.TotalSeconds:F1} s"));
    return 0;
}

// A ReLLa-style click prompt from the retrieved history (short: stories260K's context is 512 tokens).
static string Prompt(IEnumerable<CatalogueItem> history, CatalogueItem target) =>
    $"The user watched: {string.Join(", ", history.Select(i => $"\"{i.Title}\" ({i.Genre})"))}. " +
    $"Will the user like \"{target.Title}\" ({target.Genre})? Answer:";

static void Check(bool ok, string what)
{
    if (!ok) throw new InvalidOperationException("check failed: " + what);
}

static string ParseModel(string[] args)
{
    if (args.Length == 2 && args[0] == "--model") return args[1];
    if (args.Length != 0) throw new ArgumentException("usage: Consumer [--model DIR]");
    for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
    {
        string candidate = Path.Combine(dir.FullName, "models", "stories260K");
        if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
    }
    throw new DirectoryNotFoundException("models/stories260K was not found above the current folder; pass --model DIR");
}

/// <summary>A catalogue entry: the service's item id, its title and genre.</summary>
internal sealed record CatalogueItem(long Id, string Title, string Genre);
