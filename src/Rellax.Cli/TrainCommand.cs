using System.CommandLine;
using System.Text.Json;
using Rellax.Kernels;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Runtime.Training;

namespace Rellax.Cli;

/// <summary>
/// <c>rellax train</c>: trains a ReLLaX adapter (LoRA, CFLoRA generators, SPA projector) on a frozen model with
/// <see cref="AdapterTrainer"/>, from labelled prompts (<c>--input</c>) or a prepared dataset (<c>--data</c>), and writes
/// the adapter folder atomically (<see cref="TrainingOutput"/>).
/// </summary>
internal static class TrainCommand
{
    private const string Description = """
        Train a ReLLaX adapter on a frozen model with Rellax's own forward and backward: LoRA A/B (ReLLa's instruction
        tuning), the CFLoRA generators and the SPA projector (ReLLaX). The base model is never changed. The loss is BCE on
        p_yes = softmax([logit_No, logit_Yes])[1] at the last prompt position, the quantity rellax score reports (--loss lm:
        the reference's causal-LM loss on the answer " Yes." / " No.").

        Two ways in:
          --input FILE.jsonl [--valid FILE.jsonl]: rellax score's input lines plus "label": 0|1;
          --data PREPARED_DIR: prompts built as rellax eval builds them (--k, --retrieval recent|subr|mixed; mixed is
            ReLLa's ReiT: each drawn row twice, recent-K then SUBR-K, validated on SUBR-K), SPA markers when the adapter
            has a projector, h_u and item embeddings from --din DIN_DIR or --crm FILE; --train-size N draws N train rows
            with --seed; the valid split (--valid-size N of it) drives early stopping and the kept checkpoint, never the
            test split.
        The adapter: --init-adapter DIR continues one (with --cflora and/or --spa it gets new generators / a projector and
        its LoRA A and B are kept: ReLLaX's second stage); otherwise a new one from --r, --alpha, --target-modules, --cflora
        (generators, d_h from the CRM or the input's "instance" vectors) and --spa (projector, E likewise), initialised as
        PEFT and the reference do (LoRA B = 0: training starts at the base model). --trainable picks what is trained
        (default: lora for a plain LoRA, gate,projector for an adapter with either, as the reference).
        A step sees --batch-size × --accumulate examples (micro-batches of --batch-size prompts, gradients summed).

        Writes --output DIR atomically (refused when it exists, unless --overwrite): adapter_config.json and
        adapter_model.safetensors (rellax score --adapter and eval load them as they are; the best validation's, rewritten
        at each new best), training.jsonl (a line per step: step, epoch, loss, lr, tokens/s; a line per validation: valid
        AUC, LogLoss, accuracy) and training.json (settings and final numbers). A NaN/∞ loss stops the run, naming the
        step, and keeps the last good checkpoint; so does Ctrl+C.

        Examples:
          rellax train --input train.jsonl --valid valid.jsonl --output lora --steps 200
          rellax train --data ml100k --k 5 --retrieval recent --template none --train-size 8192 --output lora-ml100k
          rellax train --data ml100k --din din-ml100k --init-adapter lora-ml100k --cflora --spa --output rellax-ml100k
        """;

    /// <summary>The parts <c>--trainable</c> accepts, in help order.</summary>
    private static readonly (string Name, AdapterParts Part)[] PartNames =
        [("lora", AdapterParts.Lora), ("gate", AdapterParts.Gate), ("projector", AdapterParts.Projector)];

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var input = new Option<string?>("--input") { HelpName = "FILE.jsonl", Description = "Labelled training prompts: rellax score's input lines plus \"label\": 0|1." };
        var valid = new Option<string?>("--valid") { HelpName = "FILE.jsonl", Description = "Labelled validation prompts (with --input): early stopping and the kept checkpoint." };
        var data = new Option<string?>("--data") { HelpName = "PREPARED_DIR", Description = "A prepared dataset folder (rellax prepare): train on its train split, validate on its valid split." };
        var k = CommonOptions.Int("--k", 1, SubrTopK.MaxK, "History items per prompt (with --data).", 30);
        var retrieval = CommonOptions.Choice("--retrieval", "History per prompt (with --data): recent, subr or mixed (ReiT).", "subr", "recent", "subr", "mixed");
        var din = new Option<string?>("--din") { HelpName = "DIN_DIR", Description = "A DIN checkpoint (rellax crm train) for h_u and item embeddings (with --data)." };
        var crm = new Option<string?>("--crm") { HelpName = "FILE", Description = "CRM features (safetensors: item_ids, item_embeddings, sample_ids, user_states), instead of --din." };
        var trainSize = CommonOptions.OptionalInt("--train-size", 1, int.MaxValue, "Draw N rows of the train split with --seed (default: every row).");
        var validSize = CommonOptions.OptionalInt("--valid-size", 1, int.MaxValue, "Draw N rows of the valid split with --seed (default: every row).");
        var output = new Option<string>("--output") { HelpName = "DIR", Description = "The adapter folder to write (refused when it exists, unless --overwrite).", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing --output folder." };
        var init = new Option<string?>("--init-adapter") { HelpName = "DIR", Description = "Continue training this adapter (else a new one is made)." };
        var rank = CommonOptions.Int("--r", 1, 1024, "LoRA rank of a new adapter.", 8);
        var alpha = CommonOptions.Number("--alpha", 0, true, 1e6, "lora_alpha of a new adapter (the update is scaled by alpha / r).", 16);
        var targets = new Option<string>("--target-modules")
        {
            HelpName = "NAME,...", DefaultValueFactory = _ => "q_proj,v_proj",
            Description = "Modules a new adapter adapts in every layer: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.",
        };
        targets.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string>() is { } v && ParseModules(v) is { Error: { } error }) r.AddError($"--target-modules: {error}");
        });
        var cflora = new Option<bool>("--cflora") { Description = "Give a new adapter CFLoRA generators (d_h from the CRM)." };
        var spa = new Option<bool>("--spa") { Description = "Give a new adapter an SPA projector (E from the CRM)." };
        var trainable = new Option<string?>("--trainable")
        {
            HelpName = "lora,gate,projector",
            Description = "Parts to train, comma-separated (default: lora for a plain LoRA, gate,projector for an adapter with generators or a projector).",
        };
        trainable.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<string>() is { } v && ParseParts(v) is { Error: { } error }) r.AddError($"--trainable: {error}");
        });
        var loss = CommonOptions.Choice("--loss", "bce (on p_yes, the scored quantity) or lm (the reference's answer-token cross-entropy).", "bce", "bce", "lm");
        var optimizer = CommonOptions.Choice("--optimizer", "adamw or sgd.", "adamw", "adamw", "sgd");
        var lr = CommonOptions.Number("--lr", 0, true, double.PositiveInfinity, "Learning rate.", 1e-3);
        var wd = CommonOptions.Number("--weight-decay", 0, false, 100, "Weight decay (decoupled with adamw).", 0);
        var epochs = CommonOptions.Int("--epochs", 1, 10_000, "Most epochs.", 5);
        var steps = CommonOptions.OptionalInt("--steps", 1, int.MaxValue, "Stop after N optimizer steps, with a validation (the last epoch may be partial).");
        var batch = CommonOptions.BatchSize(8, "Prompts per forward pass (a micro-batch).");
        var accumulate = CommonOptions.Int("--accumulate", 1, CommonOptions.MaxBatchSize, "Micro-batches per optimizer step (gradient accumulation).", 1);
        var clip = CommonOptions.Number("--clip-norm", 0, false, 1e6, "Clip gradients to this global norm (0: off).", 0);
        var warmup = CommonOptions.Int("--warmup", 0, int.MaxValue, "Warm-up steps of the learning rate.", 0);
        var schedule = CommonOptions.Choice("--lr-schedule", "linear (decay to 0 over the run, as the reference and HF's Trainer) or constant.", "linear", "linear", "constant");
        var patience = CommonOptions.Int("--patience", 0, 10_000, "Stop after N validations without a better valid AUC (0: never).", 2);
        var validateEvery = CommonOptions.Int("--validate-every", 0, int.MaxValue, "Also validate every N steps (0: after each epoch only).", 0);
        var seed = CommonOptions.Seed(42, "Seed of a new adapter, of the --train-size/--valid-size draws and of the shuffling.");
        var template = CommonOptions.Template("Chat template around each prompt: vicuna or none.");
        var attention = CommonOptions.Choice("--attention", "Attention: fp32 (the attention backward is fp32 only).", "fp32", "fp32");
        var backend = CommonOptions.Choice("--backend", "Where kernels run: the backward runs on the CPU only for now, so auto means cpu.", "auto", "auto", "cpu");
        var threads = CommonOptions.Threads();
        var weights = CommonOptions.Weights();
        var recompute = new Option<bool>("--recompute") { Description = "Activation checkpointing: keep only each layer's input and recompute the layer in the backward." };
        var dropout = CommonOptions.Number("--lora-dropout", 0, false, 0.95, "LoRA dropout; the fused kernels have none, so only 0 is accepted.", 0);
        var json = CommonOptions.Json();
        var cmd = new Command("train", Description)
        {
            model, input, valid, data, k, retrieval, din, crm, trainSize, validSize, output, overwrite, init, rank, alpha, targets, cflora, spa, trainable, loss,
            optimizer, lr, wd, epochs, steps, batch, accumulate, clip, warmup, schedule, patience, validateEvery, seed, template, attention, weights.Format,
            weights.Threshold, backend, threads, recompute, dropout, json,
        };
        cmd.SetAction(r => CommonOptions.Guard(cancel =>
        {
            bool Given(Option o) => r.GetResult(o) is { Implicit: false };
            var s = new Settings
            {
                ModelDir = r.GetValue(model) ?? CommonOptions.DefaultModelDirectory(), Input = r.GetValue(input), Valid = r.GetValue(valid), Data = r.GetValue(data),
                K = r.GetValue(k), Retrieval = r.GetValue(retrieval)!, Din = r.GetValue(din), Crm = r.GetValue(crm), TrainSize = r.GetValue(trainSize),
                ValidSize = r.GetValue(validSize), Output = r.GetValue(output)!, Overwrite = r.GetValue(overwrite), InitAdapter = r.GetValue(init),
                NewAdapterOptionGiven = new[] { (Option)rank, alpha, targets }.Where(Given).Select(o => o.Name).FirstOrDefault(),
                DataOptionGiven = new[] { (Option)k, retrieval }.Where(Given).Select(o => o.Name).FirstOrDefault(),
                Init = new AdapterInitOptions { Rank = r.GetValue(rank), Alpha = r.GetValue(alpha), TargetModules = ParseModules(r.GetValue(targets)!).Modules!, Seed = r.GetValue(seed) },
                Cflora = r.GetValue(cflora), Spa = r.GetValue(spa), Trainable = r.GetValue(trainable) is { } t ? ParseParts(t).Parts : null,
                Loss = r.GetValue(loss) == "lm" ? CtrLoss.Lm : CtrLoss.Bce, Template = PromptTemplate.Parse(r.GetValue(template)!), BatchSize = r.GetValue(batch),
                Accumulate = r.GetValue(accumulate), Recompute = r.GetValue(recompute), LoraDropout = r.GetValue(dropout), Threads = r.GetValue(threads),
                Weights = weights.Parse(r), Json = r.GetValue(json),
                Loop = new TrainingOptions
                {
                    Optimizer = r.GetValue(optimizer)!, LearningRate = (float)r.GetValue(lr), WeightDecay = (float)r.GetValue(wd), Epochs = r.GetValue(epochs),
                    MaxSteps = r.GetValue(steps) ?? 0, ClipNorm = r.GetValue(clip), WarmupSteps = r.GetValue(warmup), LinearDecay = r.GetValue(schedule) == "linear",
                    Patience = r.GetValue(patience), ValidateEvery = r.GetValue(validateEvery), Seed = r.GetValue(seed),
                },
            };
            return Run(s, cancel);
        }));
        return cmd;
    }

    /// <summary>The parsed options.</summary>
    private sealed record Settings
    {
        public required string ModelDir { get; init; }
        public string? Input { get; init; }
        public string? Valid { get; init; }
        public string? Data { get; init; }
        public int K { get; init; }
        public required string Retrieval { get; init; }
        public string? Din { get; init; }
        public string? Crm { get; init; }
        public int? TrainSize { get; init; }
        public int? ValidSize { get; init; }
        public required string Output { get; init; }
        public bool Overwrite { get; init; }
        public string? InitAdapter { get; init; }
        public string? NewAdapterOptionGiven { get; init; }
        public string? DataOptionGiven { get; init; }
        public required AdapterInitOptions Init { get; init; }
        public bool Cflora { get; init; }
        public bool Spa { get; init; }
        public AdapterParts? Trainable { get; init; }
        public CtrLoss Loss { get; init; }
        public required PromptTemplate Template { get; init; }
        public int BatchSize { get; init; }
        public int Accumulate { get; init; }
        public bool Recompute { get; init; }
        public double LoraDropout { get; init; }
        public int Threads { get; init; }
        public required ModelLoadOptions Weights { get; init; }
        public bool Json { get; init; }
        public required TrainingOptions Loop { get; init; }
    }

    /// <summary>The examples of one run, and where each came from (for messages).</summary>
    private sealed record Examples(List<CtrExample> Train, List<CtrExample>? Valid, Func<RecordException, RecordException> Locate, string TrainSource);

    private static int Run(Settings s, CancellationToken cancel)
    {
        CheckCombinations(s);
        Func<string, string?> refuse = _ => s.Overwrite ? null : "already exists (pass --overwrite to replace it)";
        OutputFile.CheckFolder(s.Output, "--output", refuse, s.ModelDir, s.Input, s.Valid, s.Data, s.Din, s.Crm, s.InitAdapter);
        var clock = System.Diagnostics.Stopwatch.StartNew();

        // The backward runs on the CPU backend only (AdapterTrainer refuses others), so auto is cpu.
        using var backend = CommonOptions.CreateBackend("cpu", s.Threads);
        using var model = CommonOptions.LoadModel(s.ModelDir, backend, s.Weights);
        var scoring = new ScoringOptions { Template = s.Template, Attention = AttentionPrecision.Fp32, BatchSize = s.BatchSize };

        // Inputs first (their vectors size a new adapter's generators and projector), then the adapter, then the examples.
        List<(ScoreRequestsFile.Entry Entry, int Label)>? trainLines = null, validLines = null;
        SampleSet? set = null;
        CrmFeatures? features = null;
        DinModel? din = null;
        int? stateDim = null, embedDim = null;
        string crmSource;
        if (s.Input is not null)
        {
            trainLines = ReadLabelled(s.Input, "input file", cancel);
            validLines = s.Valid is null ? null : ReadLabelled(s.Valid, "--valid file", cancel);
            stateDim = trainLines.Select(l => l.Entry.Request.Instance?.Length).FirstOrDefault(n => n is not null);
            embedDim = trainLines.Select(l => l.Entry.Request.TargetEmbedding?.Length).FirstOrDefault(n => n is not null);
            crmSource = $"the \"instance\" / \"target_embedding\" vectors of {s.Input}";
        }
        else
        {
            set = PreparedDataset.Load(s.Data!);
            // A DIN's features are computed later, for the drawn samples only.
            din = s.Din is null ? null : DinModel.Load(s.Din, set.Dataset);
            features = s.Crm is null ? null : CrmFeatures.Load(s.Crm);
            stateDim = din?.StateDim ?? (features is { StateDim: > 0 } f1 ? f1.StateDim : null);
            embedDim = din?.EmbedDim ?? (features is { EmbedDim: > 0 } f2 ? f2.EmbedDim : null);
            crmSource = s.Din is not null ? $"the DIN in {s.Din}" : s.Crm is not null ? $"the CRM features in {s.Crm}" : "a CRM: give --din DIN_DIR or --crm FILE";
        }

        var adapter = LoadOrCreateAdapter(s, model.Config, stateDim, embedDim, crmSource);
        var parts = s.Trainable ?? AdapterTrainer.DefaultTrainable(adapter);
        CheckParts(parts, adapter, s.InitAdapter);

        Examples examples;
        using (var scorer = new CtrScorer(model, adapter, scoring))
            examples = s.Input is not null
                ? FromFiles(scorer, s, trainLines!, validLines)
                : FromPrepared(scorer, s, set!, features, din, cancel);
        CheckLabels(examples.Train, examples.TrainSource);
        cancel.ThrowIfCancellationRequested();

        var trainerOptions = new AdapterTrainingOptions { Trainable = parts, Loss = s.Loss, Scoring = scoring, Recompute = s.Recompute };
        AdapterTrainer trainer;
        try
        {
            trainer = new AdapterTrainer(model, adapter, examples.Train, examples.Valid, trainerOptions);
        }
        catch (RecordException e) when (e.RecordKind is "train" or "valid" && e.Record is not null)
        {
            throw examples.Locate(e);
        }
        using var _ = trainer;

        int perStep = s.BatchSize * s.Accumulate;
        var loop = s.Loop with { BatchSize = perStep };
        int stepsPerEpoch = (examples.Train.Count + perStep - 1) / perStep;
        int totalSteps = (int)Math.Min((long)stepsPerEpoch * loop.Epochs, loop.MaxSteps > 0 ? loop.MaxSteps : int.MaxValue);
        TerminalProgress? progress = null;
        double running = double.NaN;
        int lastStep = 0;
        var outcome = default(TrainingOutput.Outcome<AdapterTrainingResult>);
        try
        {
            outcome = TrainingOutput.Write(s.Output, refuse, temp =>
            {
                var result = AdapterTraining.Train(trainer, loop, temp, Path.GetFullPath(s.Output),
                    (step, tokensPerSecond) =>
                    {
                        lastStep = step.GlobalStep;
                        progress ??= new TerminalProgress("training", totalSteps);
                        running = double.IsNaN(running) ? step.Loss : 0.95 * running + 0.05 * step.Loss;
                        progress.Status = $"loss {running:F4}, {tokensPerSecond:F0} tokens/s";
                        progress.Report(step.GlobalStep);
                    },
                    v =>
                    {
                        progress?.Dispose();
                        progress = null;
                        if (!s.Json)
                            Console.Error.WriteLine($"step {v.GlobalStep} (epoch {v.Epoch}): valid {Describe(v.Valid)}{(v.IsBest ? " (best)" : "")}");
                    },
                    cancellationToken: cancel);
                File.WriteAllText(Path.Combine(temp, SummaryFile), JsonSerializer.Serialize(Summary(s, adapter, parts, examples, result, clock.Elapsed.TotalSeconds),
                    new JsonSerializerOptions { WriteIndented = true }) + "\n");
                return result;
            }, temp => File.Exists(Path.Combine(temp, RellaxAdapter.ConfigFileName)) && File.Exists(Path.Combine(temp, RellaxAdapter.WeightsFileName)));
        }
        finally
        {
            progress?.Dispose();
        }
        if (outcome.Stopped is { } stopped)
            return TrainingOutput.ReportStopped(stopped, outcome.Kept,
                stopped is TrainingDivergedException d ? $"step {lastStep + 1} (epoch {d.Epoch}, step {d.Step} of the epoch)" : "",
                $"the last good checkpoint is in {s.Output}", "no validation had kept a checkpoint yet, so nothing was written");

        var done = outcome.Result!;
        if (s.Json) Console.WriteLine(JsonSerializer.Serialize(Summary(s, adapter, parts, examples, done, clock.Elapsed.TotalSeconds)));
        else
        {
            Console.WriteLine($"trained {PartsText(parts)} on {examples.Train.Count} examples: {done.Loop.Steps} steps in {done.StepSeconds:F1}s " +
                              $"({done.TokensPerSecond:F0} tokens/s); kept step {done.Loop.BestStep} (epoch {done.Loop.BestEpoch})" +
                              (done.Loop.StoppedEarly ? ", stopped early" : done.Loop.ReachedMaxSteps ? ", --steps reached" : ""));
            if (done.Loop.SelectedOn == "valid_logloss")
                Console.WriteLine("valid AUC is undefined (the validation set has one class): the checkpoint was selected on valid LogLoss");
            Console.WriteLine($"valid: {Describe(done.BestValid)}");
            Console.WriteLine($"wrote {Path.GetFullPath(s.Output)}");
        }
        return 0;
    }

    /// <summary>The run's summary: <c>training.json</c> and the <c>--json</c> output.</summary>
    private static object Summary(Settings s, RellaxAdapter adapter, AdapterParts parts, Examples examples, AdapterTrainingResult r, double seconds) => new
    {
        model = s.ModelDir, input = s.Input, valid_input = s.Valid, data = s.Data, k = s.Data is null ? (int?)null : s.K, retrieval = s.Data is null ? null : s.Retrieval,
        output = s.Output, init_adapter = s.InitAdapter, r = adapter.Config.Rank, alpha = adapter.Config.Alpha,
        target_modules = adapter.Config.TargetModules.Select(LlamaModules.PeftName).ToArray(), cflora = adapter.HasGenerators, spa = adapter.Projector is not null,
        trainable = PartsText(parts), loss = s.Loss == CtrLoss.Lm ? "lm" : "bce", template = s.Template.Name, optimizer = s.Loop.Optimizer, lr = s.Loop.LearningRate,
        weight_decay = s.Loop.WeightDecay, lr_schedule = s.Loop.LinearDecay ? "linear" : "constant", warmup = s.Loop.WarmupSteps, clip_norm = s.Loop.ClipNorm,
        epochs = s.Loop.Epochs, steps = s.Loop.MaxSteps > 0 ? s.Loop.MaxSteps : (int?)null, batch_size = s.BatchSize, accumulate = s.Accumulate, seed = s.Loop.Seed,
        recompute = s.Recompute, train_examples = examples.Train.Count, valid_examples = examples.Valid?.Count ?? 0,
        steps_run = r.Loop.Steps, epochs_run = r.Loop.Epochs.Count, best_step = r.Loop.BestStep, best_epoch = r.Loop.BestEpoch, stopped_early = r.Loop.StoppedEarly,
        reached_steps = r.Loop.ReachedMaxSteps, selected_on = r.Loop.SelectedOn,
        valid = r.BestValid is { } v ? new { auc = double.IsFinite(v.Auc) ? v.Auc : (double?)null, logloss = v.LogLoss, accuracy = v.Accuracy } : null,
        tokens = r.Tokens, tokens_per_second = Math.Round(r.TokensPerSecond, 1), step_seconds = Math.Round(r.StepSeconds, 3),
        peak_activation_bytes = r.PeakActivationBytes, seconds = Math.Round(seconds, 3),
    };

    /// <summary>The summary file's name (settings and final numbers).</summary>
    public const string SummaryFile = TrainedPromptSettings.FileName;

    /// <summary>Refuses option combinations that cannot mean anything, each in one line.</summary>
    private static void CheckCombinations(Settings s)
    {
        if (s.LoraDropout > 0)
            throw new ArgumentException($"--lora-dropout {s.LoraDropout.ToString(System.Globalization.CultureInfo.InvariantCulture)}: the fused CFLoRA kernels have no dropout, so training runs without it; omit --lora-dropout (or give 0)");
        if ((s.Input is null) == (s.Data is null))
            throw new ArgumentException(s.Input is null
                ? "give the training examples: --input FILE.jsonl (labelled prompts) or --data PREPARED_DIR (a prepared dataset)"
                : "give either --input FILE.jsonl or --data PREPARED_DIR, not both");
        if (s.Input is not null)
        {
            foreach (var (given, name) in new[] { (s.Din, "--din"), (s.Crm, "--crm") })
                if (given is not null) throw new ArgumentException($"{name} goes with --data; with --input the vectors come from the input lines");
            if (s.TrainSize is not null || s.ValidSize is not null)
                throw new ArgumentException($"{(s.TrainSize is not null ? "--train-size" : "--valid-size")} goes with --data (it draws rows of a prepared split)");
            if (s.DataOptionGiven is { } dataOption)
                throw new ArgumentException($"{dataOption} goes with --data (it builds prompts from a prepared dataset); --input lines are prompts already");
        }
        else if (s.Valid is not null)
            throw new ArgumentException("--valid goes with --input; with --data the prepared folder's valid split is used");
        if (s.Din is not null && s.Crm is not null) throw new ArgumentException("give either --din or --crm, not both");
        if (s.InitAdapter is not null && s.NewAdapterOptionGiven is { } option)
            throw new ArgumentException($"{option} describes a new adapter, but --init-adapter continues {s.InitAdapter}: give one or the other");
    }

    private static RellaxAdapter LoadOrCreateAdapter(Settings s, LlamaConfig config, int? stateDim, int? embedDim, string crmSource)
    {
        if (s.InitAdapter is not null)
        {
            var loaded = RellaxAdapter.Load(s.InitAdapter, config);
            if (!s.Cflora && !s.Spa) return loaded;
            // ReLLaX's second stage: the trained LoRA gets new generators and/or a projector (its A and B are kept).
            if (s.Cflora && loaded.HasGenerators) throw new ArgumentException($"--cflora: adapter {s.InitAdapter} already has CFLoRA generators (lora_gate); omit --cflora to continue training them");
            if (s.Spa && loaded.Projector is not null) throw new ArgumentException($"--spa: adapter {s.InitAdapter} already has an SPA projector; omit --spa to continue training it");
            if (s.Cflora && stateDim is null) throw new ArgumentException($"--cflora needs the CRM's user-state size d_h, from {crmSource}");
            if (s.Spa && embedDim is null) throw new ArgumentException($"--spa needs the CRM's item-embedding size E, from {crmSource}");
            return AdapterInit.Extend(config, loaded, s.Cflora ? stateDim : null, s.Spa ? embedDim : null, s.Init.Seed,
                $"{s.InitAdapter} with new {(s.Cflora && s.Spa ? "generators and projector" : s.Cflora ? "generators" : "projector")}");
        }
        if (s.Cflora && stateDim is null)
            throw new ArgumentException($"--cflora needs the CRM's user-state size d_h, from {crmSource}" + (s.Input is not null ? " (no line has an \"instance\" vector)" : ""));
        if (s.Spa && embedDim is null)
            throw new ArgumentException($"--spa needs the CRM's item-embedding size E, from {crmSource}" + (s.Input is not null ? " (no line has a \"target_embedding\" vector)" : ""));
        return AdapterInit.Create(config, s.Init with { InstanceDim = s.Cflora ? stateDim : null, CrmEmbedDim = s.Spa ? embedDim : null },
            $"new adapter (r {s.Init.Rank}, seed {s.Init.Seed})");
    }

    /// <summary>Refuses to train a part the adapter does not have.</summary>
    private static void CheckParts(AdapterParts parts, RellaxAdapter adapter, string? initAdapter)
    {
        string which = initAdapter is null ? "the new adapter" : $"adapter {initAdapter}";
        if (parts.HasFlag(AdapterParts.Gate) && !adapter.HasGenerators)
            throw new ArgumentException($"--trainable gate: {which} has no CFLoRA generators (lora_gate)" +
                (initAdapter is null ? "; add --cflora to give it some" : "; train lora, or start a new adapter with --cflora"));
        if (parts.HasFlag(AdapterParts.Projector) && adapter.Projector is null)
            throw new ArgumentException($"--trainable projector: {which} has no SPA projector (ctr_input_embedding_prj)" +
                (initAdapter is null ? "; add --spa to give it one" : ""));
        if (parts.HasFlag(AdapterParts.Lora) && adapter.Targets.Count == 0)
            throw new ArgumentException($"--trainable lora: {which} has no LoRA targets");
    }

    private static List<(ScoreRequestsFile.Entry Entry, int Label)> ReadLabelled(string path, string what, CancellationToken cancel)
    {
        using var reader = JsonLinesReader.Open(path, what);
        var lines = new List<(ScoreRequestsFile.Entry, int)>();
        foreach (var line in ScoreRequestsFile.ReadLabelled(reader))
        {
            lines.Add(line);
            if (lines.Count % 4096 == 0) cancel.ThrowIfCancellationRequested();
        }
        return lines;
    }

    private static Examples FromFiles(CtrScorer scorer, Settings s, List<(ScoreRequestsFile.Entry Entry, int Label)> train, List<(ScoreRequestsFile.Entry Entry, int Label)>? valid)
    {
        // Every line is checked against the model and adapter first, so errors name FILE:LINE.
        foreach (var (entry, _) in train) ScoreRequestsFile.Check(scorer, s.Input!, entry);
        if (valid is not null)
            foreach (var (entry, _) in valid) ScoreRequestsFile.Check(scorer, s.Valid!, entry);
        return new Examples(
            [.. train.Select(l => new CtrExample(l.Entry.Request, l.Label))],
            valid is { Count: > 0 } ? [.. valid.Select(l => new CtrExample(l.Entry.Request, l.Label))] : null,
            e =>
            {
                var (file, lines) = e.RecordKind == "train" ? (s.Input!, train) : (s.Valid!, valid!);
                var entry = lines[e.Record!.Value].Entry;
                return e.At(file, entry.Line, $"id {entry.RawId}");
            },
            s.Input!);
    }

    private static Examples FromPrepared(CtrScorer scorer, Settings s, SampleSet set, CrmFeatures? features, DinModel? din, CancellationToken cancel)
    {
        var trainSamples = CtrTrainingData.Draw(set, SampleSplit.Train, s.TrainSize, s.Loop.Seed);
        var validSamples = CtrTrainingData.Draw(set, SampleSplit.Valid, s.ValidSize, s.Loop.Seed);
        if (trainSamples.Count == 0) throw new ArgumentException($"the train split of '{s.Data}' is empty: there is nothing to train on");
        if (validSamples.Count == 0)
            PipelineReport.Warn($"the valid split of '{s.Data}' is empty: nothing is validated, the last parameters are kept");
        if (din is not null) features = din.Featurize(scorer.Model.Backend, set, [.. trainSamples, .. validSamples]);
        bool mixed = s.Retrieval == "mixed";
        var options = new EvaluationOptions
        {
            K = s.K, Retrieval = s.Retrieval == "recent" ? HistoryRetrieval.Recent : HistoryRetrieval.Subr,
            CacheDirectory = Path.Combine(s.Data!, "cache"), Scoring = scorer.Options,
        };
        CtrTrainingSet train, valid;
        using (var progress = new StageProgress())
        {
            train = CtrTrainingData.Build(scorer, set, trainSamples, features, options, mixed, progress, PipelineReport.Warn, cancel);
            // ReiT validates (and ReLLa evaluates) on SUBR-K prompts.
            valid = validSamples.Count == 0 ? new CtrTrainingSet([], [], 0, [])
                : CtrTrainingData.Build(scorer, set, validSamples, features, options, mixed: false, progress, PipelineReport.Warn, cancel);
        }
        return new Examples([.. train.Examples], valid.Examples.Count > 0 ? [.. valid.Examples] : null,
            e =>
            {
                var sample = (e.RecordKind == "train" ? train.Samples : valid.Samples)[e.Record!.Value];
                return new RecordException($"{e.RecordKind} sample", sample.Index, null, e.Reason, e);
            },
            $"the train split of '{s.Data}'");
    }

    /// <summary>Refuses an empty or single-class training set.</summary>
    private static void CheckLabels(List<CtrExample> train, string source)
    {
        if (train.Count == 0) throw new ArgumentException($"{source}: no labelled examples (every line is blank)");
        int positives = train.Count(e => e.Label == 1);
        if (positives == 0 || positives == train.Count)
            throw new ArgumentException($"{source}: all {train.Count} examples are labelled {(positives == 0 ? 0 : 1)}: a click model needs both classes");
    }

    private static string Describe(ValidationResult? m) => m is { } v
        ? $"AUC {(double.IsFinite(v.Auc) ? v.Auc.ToString("F4") : "undefined (one class)")}, LogLoss {v.LogLoss:F4}, accuracy {v.Accuracy:F4}"
        : "none (no validation set)";

    private static string PartsText(AdapterParts parts) => string.Join(",", PartNames.Where(p => parts.HasFlag(p.Part)).Select(p => p.Name));

    /// <summary>Parses <c>--trainable</c>: a comma list of lora, gate, projector.</summary>
    private static (AdapterParts Parts, string? Error) ParseParts(string value)
    {
        var parts = AdapterParts.None;
        foreach (string raw in value.Split(','))
        {
            string name = raw.Trim();
            var match = PartNames.Where(p => p.Name == name).ToArray();
            if (match.Length == 0) return (parts, $"'{name}' is not a part; expected a comma list of {string.Join(", ", PartNames.Select(p => p.Name))}");
            parts |= match[0].Part;
        }
        return (parts, null);
    }

    /// <summary>Parses <c>--target-modules</c>: a comma list of PEFT module names.</summary>
    private static (LlamaModule[]? Modules, string? Error) ParseModules(string value)
    {
        var modules = new List<LlamaModule>();
        foreach (string raw in value.Split(','))
        {
            string name = raw.Trim();
            if (!LlamaModules.TryParse(name, out var module))
                return (null, $"'{name}' is not a module; expected a comma list of {string.Join(", ", Enum.GetValues<LlamaModule>().Select(LlamaModules.PeftName))}");
            if (modules.Contains(module)) return (null, $"'{name}' is listed twice");
            modules.Add(module);
        }
        return ([.. modules], null);
    }
}
