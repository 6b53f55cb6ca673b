using System.Diagnostics;
using Rellax.Kernels;
using Rellax.Runtime;
using Rellax.Runtime.Training;

namespace Rellax.Rec;

/// <summary>An LLM arm of the ReLLaX ablation (<see cref="AdapterArms"/>): what history the prompts list and what is trained.</summary>
public enum AdapterArm
{
    /// <summary>ReLLa: a new LoRA trained on recent-K prompts.</summary>
    LoraRecent,

    /// <summary>ReLLa: a new LoRA trained on SUBR-K prompts.</summary>
    LoraSubr,

    /// <summary>ReLLa's ReiT: a new LoRA trained on both prompt forms of each row (recent-K and SUBR-K), tested on SUBR-K.</summary>
    ReiT,

    /// <summary>ReLLaX: the SUBR-K LoRA frozen, new CFLoRA generators and a new SPA projector trained (the CRM frozen).</summary>
    ReLLaX,

    /// <summary>Ablation: the SUBR-K LoRA frozen, only a new SPA projector trained.</summary>
    SpaOnly,

    /// <summary>Ablation: the SUBR-K LoRA frozen, only new CFLoRA generators trained.</summary>
    CfloraOnly,
}

/// <summary>The settings every arm of one ablation shares: the same rows, the same budget, the same prompts.</summary>
public sealed record AdapterArmOptions
{
    /// <summary>History items per prompt (recent-K or SUBR-K).</summary>
    public int K { get; init; } = 3;

    /// <summary>Train rows drawn with <see cref="Seed"/> (null: the whole train split); every arm trains on the same rows.</summary>
    public int? TrainRows { get; init; }

    /// <summary>Valid rows drawn with <see cref="Seed"/> (null: the whole valid split).</summary>
    public int? ValidRows { get; init; }

    /// <summary>Test samples scored (0: the whole test split; otherwise the first N in split order).</summary>
    public int TestLimit { get; init; }

    /// <summary>The budget: optimizer steps of <see cref="BatchSize"/> examples, the same for every arm (ReiT's two prompt
    /// forms per row share it).</summary>
    public int Steps { get; init; } = 24;

    /// <summary>Examples per optimizer step (one micro-batch).</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Decay the learning rate linearly to 0 over <see cref="Steps"/> (the reference's schedule); false: constant.</summary>
    public bool LinearDecay { get; init; } = true;

    /// <summary>AdamW learning rate of the LoRA arms.</summary>
    public float LoraLearningRate { get; init; } = 5e-3f;

    /// <summary>AdamW learning rate of the generators and the projector (ReLLaX, SPA only, CFLoRA only).</summary>
    public float AdapterLearningRate { get; init; } = 5e-3f;

    /// <summary>Validate every N steps (0: only at the end); the kept parameters are the best valid AUC's.</summary>
    public int ValidateEvery { get; init; } = 8;

    /// <summary>LoRA rank of a new LoRA.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>lora_alpha of a new LoRA.</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Modules a new LoRA adapts in every layer.</summary>
    public IReadOnlyList<LlamaModule> TargetModules { get; init; } =
        [LlamaModule.QProj, LlamaModule.KProj, LlamaModule.VProj, LlamaModule.OProj, LlamaModule.GateProj, LlamaModule.UpProj, LlamaModule.DownProj];

    /// <summary>Seed of the row draws, the new parameters and the shuffling.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>SUBR and scoring settings (<see cref="EvaluationOptions.K"/>, <see cref="EvaluationOptions.Retrieval"/> and
    /// <see cref="EvaluationOptions.Split"/> are set per arm).</summary>
    public EvaluationOptions Evaluation { get; init; } = new() { Scoring = new ScoringOptions { Template = PromptTemplate.None } };
}

/// <summary>One validation of an arm's training.</summary>
/// <param name="Step">The optimizer step after which it ran.</param>
/// <param name="Auc">Valid AUC (NaN when undefined).</param>
/// <param name="LogLoss">Valid LogLoss.</param>
public readonly record struct ValidationPoint(int Step, double Auc, double LogLoss);

/// <summary>What <see cref="AdapterArms.Run"/> returns for one arm.</summary>
/// <param name="Arm">The arm.</param>
/// <param name="Trained">What was trained, in words (<c>LoRA A/B</c>, <c>generators + projector</c>, ...).</param>
/// <param name="TrainRows">Train rows (samples) the arm saw.</param>
/// <param name="TrainExamples">Training prompts (twice the rows for ReiT).</param>
/// <param name="Training">The training run (steps, tokens, best valid).</param>
/// <param name="Curve">Every validation, in order.</param>
/// <param name="Test">The test split scored with the kept parameters.</param>
/// <param name="Seconds">Wall time of the arm: prompts, training, validations and the test scoring.</param>
/// <param name="Adapter">The trained adapter (the kept parameters).</param>
public sealed record AdapterArmResult(AdapterArm Arm, string Trained, int TrainRows, int TrainExamples, AdapterTrainingResult Training,
    IReadOnlyList<ValidationPoint> Curve, EvaluationResult Test, double Seconds, RellaxAdapter Adapter);

/// <summary>
/// Trains and tests the LLM arms of the ReLLaX ablation (the paper's Table of ReLLa vs ReLLaX and its parts) on one
/// prepared dataset, each arm on the same train rows with the same step budget, selected on the valid split and scored
/// once on the test split: what <c>rellax demo</c> runs, and what <c>rellax train</c> + <c>rellax eval</c> run from the
/// command line.
/// </summary>
public static class AdapterArms
{
    /// <summary>The arm's short name, as tables and JSON print it (<c>lora-recent</c>, <c>lora-subr</c>, <c>reit</c>,
    /// <c>rellax</c>, <c>spa-only</c>, <c>cflora-only</c>).</summary>
    public static string Name(AdapterArm arm) => arm switch
    {
        AdapterArm.LoraRecent => "lora-recent",
        AdapterArm.LoraSubr => "lora-subr",
        AdapterArm.ReiT => "reit",
        AdapterArm.ReLLaX => "rellax",
        AdapterArm.SpaOnly => "spa-only",
        AdapterArm.CfloraOnly => "cflora-only",
        _ => throw new ArgumentOutOfRangeException(nameof(arm), arm, "not an arm"),
    };

    /// <summary>True for the arms that start from the trained SUBR-K LoRA (the <c>lora</c> argument of <see cref="Run"/>).</summary>
    public static bool NeedsLora(AdapterArm arm) => arm is AdapterArm.ReLLaX or AdapterArm.SpaOnly or AdapterArm.CfloraOnly;

    /// <summary>
    /// Trains one arm and scores the test split with its best-validated parameters.
    /// </summary>
    /// <param name="model">The frozen base model (CPU backend, f32/f16/bf16 weights: <see cref="AdapterTrainer"/>).</param>
    /// <param name="set">The prepared dataset.</param>
    /// <param name="crm">CRM features (from the trained, frozen DIN) covering every train, valid and test sample the arm
    /// uses; needed by <see cref="AdapterArm.ReLLaX"/>, <see cref="AdapterArm.SpaOnly"/> and
    /// <see cref="AdapterArm.CfloraOnly"/>, ignored by the LoRA arms.</param>
    /// <param name="arm">Which arm.</param>
    /// <param name="lora">The trained SUBR-K LoRA the ReLLaX arms extend (frozen); null for the LoRA arms.</param>
    /// <param name="options">The shared settings.</param>
    /// <param name="directory">An existing folder: the arm's adapter (its best validation's) and <c>training.jsonl</c>.</param>
    /// <param name="onStep">Called after every optimizer step with (step, loss) (progress).</param>
    /// <param name="warn">Warnings (one line each).</param>
    /// <param name="progress">Stage progress: the training data's <c>embed</c> and <c>retrieve</c> (SUBR arms, when not
    /// cached), then <c>train</c> (optimizer steps, to <see cref="AdapterArmOptions.Steps"/>), then the test scoring's stages
    /// (<see cref="CtrEvaluation.Run"/>: <c>forward</c> last).</param>
    /// <param name="cancellationToken">Checked between steps and batches.</param>
    /// <exception cref="ArgumentException">A ReLLaX arm without <paramref name="lora"/> or <paramref name="crm"/>, a LoRA
    /// arm given <paramref name="lora"/>, or what <see cref="CtrTrainingData.Build"/> refuses.</exception>
    /// <exception cref="TrainingDivergedException">The loss became NaN or ∞.</exception>
    public static AdapterArmResult Run(LlamaModel model, SampleSet set, CrmFeatures? crm, AdapterArm arm, RellaxAdapter? lora, AdapterArmOptions options,
        string directory, Action<int, double>? onStep = null, Action<string>? warn = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        _ = Name(arm);
        if (NeedsLora(arm) != (lora is not null))
            throw new ArgumentException(lora is null
                ? $"arm {Name(arm)} extends the trained SUBR-K LoRA: pass it"
                : $"arm {Name(arm)} trains a new LoRA: pass no adapter to extend", nameof(lora));
        if (NeedsLora(arm) && crm is null) throw new ArgumentException($"arm {Name(arm)} needs CRM features (h_u and item embeddings from the DIN)", nameof(crm));
        var clock = Stopwatch.StartNew();

        var (adapter, parts, trained) = arm switch
        {
            AdapterArm.ReLLaX => (AdapterInit.Extend(model.Config, lora!, crm!.StateDim, crm.EmbedDim, options.Seed, "rellax"),
                AdapterParts.Gate | AdapterParts.Projector, "generators + projector"),
            AdapterArm.SpaOnly => (AdapterInit.Extend(model.Config, lora!, null, crm!.EmbedDim, options.Seed, "spa-only"), AdapterParts.Projector, "projector"),
            AdapterArm.CfloraOnly => (AdapterInit.Extend(model.Config, lora!, crm!.StateDim, null, options.Seed, "cflora-only"), AdapterParts.Gate, "generators"),
            _ => (AdapterInit.Create(model.Config, new AdapterInitOptions { Rank = options.Rank, Alpha = options.Alpha, TargetModules = options.TargetModules, Seed = options.Seed },
                Name(arm)), AdapterParts.Lora, "LoRA A/B"),
        };
        var evaluation = options.Evaluation with
        {
            K = options.K,
            Retrieval = arm == AdapterArm.LoraRecent ? HistoryRetrieval.Recent : HistoryRetrieval.Subr,
        };
        var armCrm = adapter.HasGenerators || adapter.Projector is not null ? crm : null;
        var trainSamples = CtrTrainingData.Draw(set, SampleSplit.Train, options.TrainRows, options.Seed);
        var validSamples = CtrTrainingData.Draw(set, SampleSplit.Valid, options.ValidRows, options.Seed);
        if (trainSamples.Count == 0) throw new ArgumentException("the train split is empty: there is nothing to train on", nameof(set));
        CtrTrainingSet train, valid;
        using (var scorer = new CtrScorer(model, adapter, evaluation.Scoring))
        {
            train = CtrTrainingData.Build(scorer, set, trainSamples, armCrm, evaluation, mixed: arm == AdapterArm.ReiT, progress, warn, cancellationToken);
            valid = validSamples.Count == 0 ? new CtrTrainingSet([], [], 0, [])
                : CtrTrainingData.Build(scorer, set, validSamples, armCrm, evaluation, mixed: false, progress, warn, cancellationToken);
        }

        var loop = new TrainingOptions
        {
            Optimizer = "adamw", LearningRate = parts == AdapterParts.Lora ? options.LoraLearningRate : options.AdapterLearningRate,
            BatchSize = options.BatchSize, Epochs = 10_000, MaxSteps = options.Steps, ValidateEvery = options.ValidateEvery,
            LinearDecay = options.LinearDecay, Patience = 0, Seed = options.Seed,
        };
        var curve = new List<ValidationPoint>();
        AdapterTrainingResult training;
        RellaxAdapter result;
        using (var trainer = new AdapterTrainer(model, adapter, train.Examples, valid.Examples.Count > 0 ? valid.Examples : null,
                   new AdapterTrainingOptions { Trainable = parts, Loss = CtrLoss.Bce, Scoring = evaluation.Scoring }))
        {
            training = AdapterTraining.Train(trainer, loop, directory, Name(arm),
                onStep is null ? null : (s, _) => onStep(s.GlobalStep, s.Loss),
                v => { if (v.Valid is { } m) curve.Add(new ValidationPoint(v.GlobalStep, m.Auc, m.LogLoss)); },
                progress, cancellationToken);
            result = trainer.ToAdapter(Name(arm));
        }
        // What eval and score read to build the same prompts (TrainedPromptSettings), and the run's numbers.
        File.WriteAllText(Path.Combine(directory, TrainedPromptSettings.FileName), System.Text.Json.JsonSerializer.Serialize(new
        {
            arm = Name(arm), trained, k = options.K, retrieval = arm switch { AdapterArm.LoraRecent => "recent", AdapterArm.ReiT => "mixed", _ => "subr" },
            template = evaluation.Scoring.Template.Name, train_rows = trainSamples.Count, train_examples = train.Examples.Count, valid_examples = valid.Examples.Count,
            steps = training.Loop.Steps, best_step = training.Loop.BestStep, batch_size = options.BatchSize, lr = loop.LearningRate, seed = options.Seed,
            valid_auc = training.BestValid is { } b && double.IsFinite(b.Auc) ? b.Auc : (double?)null,
        }, new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        var test = CtrEvaluation.Run(model, result, set, armCrm, evaluation with { Split = SampleSplit.Test, Limit = options.TestLimit },
            progress, warn, cancellationToken);
        return new AdapterArmResult(arm, trained, trainSamples.Count, train.Examples.Count, training, curve, test, clock.Elapsed.TotalSeconds, result);
    }
}
