using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Rellax.Benchmarks;

if (args is ["--attention-accuracy"])
{
    AttentionBenchmarks.PrintAccuracy();
    return;
}

if (args is ["--attention-decode-quick"])
{
    AttentionDecodeBenchmarks.Interleaved();
    return;
}

if (args is ["--decode-quick"])
{
    DecodeQuick.Run();
    return;
}

if (args is ["--attention-quick"])
{
    AttentionQuick.Run();
    return;
}

if (args is ["--scoring-memory", var side])
{
    ScoringBenchmarks.MeasureMemory(side);
    return;
}

if (args is ["--crm-training", var crmData, var crmEpochs, var crmThreads, ..])
{
    CrmTrainingComparison.Run(crmData, int.Parse(crmEpochs), int.Parse(crmThreads),
        initStd: args.Length > 4 ? double.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : 1);
    return;
}

if (args is ["--crm-ml1m", var ml1mThreads])
{
    CrmTrainingComparison.RunMl1mSized(int.Parse(ml1mThreads));
    return;
}

if (args is ["--cflora-backward-phases"])
{
    CfloraBackwardBenchmarks.PrintPhases();
    return;
}

if (args is ["--training-steps", var trainingMode, ..])
{
    TrainingBenchmarks.PrintSteps(trainingMode, args.Length > 2 ? int.Parse(args[2]) : 2);
    return;
}

if (args is ["--training-memory", var memorySide, var memoryMode])
{
    TrainingBenchmarks.PrintMemory(memorySide, memoryMode);
    return;
}

if (args is ["--training-stories"])
{
    TrainingBenchmarks.PrintStories();
    return;
}

if (args is ["--int8-accuracy"])
{
    ScoringBenchmarks.Int8Accuracy();
    return;
}

if (args is ["--int8-quick"])
{
    Int8LinearBenchmarks.Quick();
    return;
}

if (args is ["--prefill-anchor", var anchorWeights, var anchorPrompts, ..])
{
    PrefillAnchor.Run(anchorWeights, int.Parse(anchorPrompts), args.Length > 3 ? args[3] : null);
    return;
}

if (args is ["--int8-diagnose", var diagnosePrompts])
{
    Int8Diagnosis.Run(int.Parse(diagnosePrompts));
    return;
}

if (args is ["--subr-steady"])
{
    SubrSteadyState.Run();
    return;
}

// In process: BenchmarkDotNet's generated out-of-process project would not import eng/TorchSharp.targets,
// so TorchSharp could not load there. A short job keeps a full GEMM run to a few minutes; compare ratios within one run.
var job = Job.Default
    .WithToolchain(new InProcessEmitToolchain(TimeSpan.FromHours(1), logOutput: true)) // SUBR's big torch cases run for minutes
    .WithWarmupCount(3)
    .WithIterationCount(15)
    .WithLaunchCount(1)
    .WithId("InProcessShort");
var config = DefaultConfig.Instance.AddJob(job).WithOptions(ConfigOptions.DisableOptimizationsValidator);

var summaries = BenchmarkSwitcher.FromAssembly(typeof(GemmBenchmarks).Assembly).Run(args, config).ToArray();
RooflineReport.Print(summaries);
AttentionBenchmarks.PrintReport(summaries);
ScoringBenchmarks.PrintReport(summaries);
