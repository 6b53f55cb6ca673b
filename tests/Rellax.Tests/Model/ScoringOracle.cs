using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>The oracle's score of one request: p_yes = softmax([logit_no, logit_yes])[1] in float64.</summary>
internal readonly record struct OracleScore(double PYes, double LogitYes, double LogitNo);

/// <summary>
/// The scoring side of the oracle: answer tokens found from the tokenizer independently of <see cref="CtrScorer"/>, requests
/// turned into <see cref="OracleSample"/>s, and seeded random adapters.
/// </summary>
internal static class ScoringOracle
{
    /// <summary>
    /// The answer tokens as they follow <paramref name="templated"/> (<see cref="Training.OracleTokens.AnswerTokens"/>): the tokens
    /// both continuations share (appended to the prompt) and the first tokens where they differ.
    /// </summary>
    public static (int[] CommonPrefix, int Yes, int No) AnswerTokens(LlamaTokenizer tokenizer, string templated, string yes = " Yes", string no = " No") =>
        Training.OracleTokens.AnswerTokens(tokenizer, templated, yes, no);

    /// <summary>
    /// The oracle's score of <paramref name="request"/>: the templated prompt tokenized with its markers as slots
    /// (<see cref="LlamaTokenizer.EncodeWithMarkers"/>; -1 = <paramref name="histToken"/>, -2 = <paramref name="targetToken"/>),
    /// the answers' common prefix appended, logits at the last position.
    /// </summary>
    public static OracleScore Score(TorchLlamaOracle oracle, LlamaTokenizer tokenizer, PromptTemplate template, CtrRequest request,
        string histToken = "[hist]", string targetToken = "[target]")
    {
        string text = template.Apply(request.Prompt);
        var (prefix, yes, no) = AnswerTokens(tokenizer, text);
        int[] ids = [.. tokenizer.EncodeWithMarkers(text, [histToken, targetToken]), .. prefix];
        var logits = oracle.LastLogits(new OracleSample(ids, request.Instance, request.HistEmbeddings, request.TargetEmbedding));
        double ly = logits[yes], ln = logits[no];
        return new OracleScore(1 / (1 + Math.Exp(ln - ly)), ly, ln);
    }

    /// <summary>Uniform values in [-<paramref name="amplitude"/>, <paramref name="amplitude"/>] (+ <paramref name="offset"/>).</summary>
    public static float[] Uniform(Random rng, int n, double amplitude, double offset = 0) =>
        [.. Enumerable.Range(0, n).Select(_ => (float)(offset + amplitude * (rng.NextDouble() * 2 - 1)))];

    /// <summary>
    /// A seeded random adapter for <paramref name="model"/>: LoRA factors on <paramref name="modules"/> of every layer (none when
    /// empty), CFLoRA generators when <paramref name="instanceDim"/> is given, a projector when <paramref name="crmDim"/> is
    /// given. Magnitudes are chosen so the adapter moves the logits by order 1 (LoRA B is not zero as after PEFT init).
    /// </summary>
    public static (AdapterConfig Config, LoraTarget[] Targets, SpaProjectorWeights? Projector) RandomAdapter(LlamaConfig model, int seed,
        IReadOnlyList<LlamaModule> modules, int rank, int? instanceDim, int? crmDim, double alpha = 16)
    {
        var rng = new Random(seed);
        int h = model.HiddenSize, q = model.NumAttentionHeads * model.HeadDim, kv = model.NumKeyValueHeads * model.HeadDim, i = model.IntermediateSize;
        (int In, int Out) Dims(LlamaModule m) => m switch
        {
            LlamaModule.QProj => (h, q), LlamaModule.KProj or LlamaModule.VProj => (h, kv), LlamaModule.OProj => (q, h),
            LlamaModule.GateProj or LlamaModule.UpProj => (h, i), _ => (i, h),
        };
        var targets = new List<LoraTarget>();
        for (int l = 0; l < model.NumHiddenLayers; l++)
            foreach (var m in modules.Order())
            {
                var (din, dout) = Dims(m);
                CfloraGeneratorWeights? gen = instanceDim is { } dh
                    ? new CfloraGeneratorWeights(Uniform(rng, dh, 0.3, 1), Uniform(rng, dh, 0.3), Uniform(rng, 2 * rank * rank * dh, 0.6),
                        Uniform(rng, 2 * rank * rank, 0.3), Uniform(rng, rank * rank * 2 * rank * rank, 0.3), Uniform(rng, rank * rank, 0.3))
                    : null;
                targets.Add(new LoraTarget(l, m, din, dout, Uniform(rng, rank * din, 1.5 / Math.Sqrt(din)), Uniform(rng, dout * rank, 0.5 / rank), gen));
            }
        SpaProjectorWeights? projector = crmDim is { } e
            ? new SpaProjectorWeights(Uniform(rng, h * e, 1.0 / Math.Sqrt(e)), Uniform(rng, h, 0.1), Uniform(rng, h * h, 1.5 / Math.Sqrt(h)), Uniform(rng, h, 0.1))
            : null;
        var config = new AdapterConfig
        {
            Rank = rank, Alpha = alpha, TargetModules = [.. modules], InstanceDim = instanceDim, CrmEmbedDim = crmDim,
            BaseModelName = "random test adapter",
        };
        return (config, [.. targets], projector);
    }

    /// <summary>alpha / r, computed here rather than read from <see cref="AdapterConfig.Scale"/>.</summary>
    public static double LoraScale(AdapterConfig config) => config.Alpha / config.Rank;

    /// <summary>
    /// SPA prompts: <paramref name="count"/> prompts with different numbers of history items (each followed by a history
    /// marker) and one target marker, of different lengths; each request carries random h_u and CRM embeddings.
    /// </summary>
    public static List<CtrRequest> RandomRequests(int seed, int count, int? instanceDim, int? crmDim, bool markers = true)
    {
        string[] titles = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Jumanji (1995)", "Sabrina (1995)", "Balto (1995)",
            "Nixon (1995)", "GoldenEye (1995)", "Sense and Sensibility (1995)", "Four Rooms (1995)", "Get Shorty (1995)"];
        var rng = new Random(seed);
        var requests = new List<CtrRequest>();
        for (int s = 0; s < count; s++)
        {
            int items = 1 + (s * 3 + seed) % 5;
            var hist = new List<string>();
            for (int k = 0; k < items; k++)
                hist.Add($"'{k}. {titles[rng.Next(titles.Length)]} ({1 + rng.Next(5)} stars){(markers ? "[hist]" : "")}'");
            string prompt = $"The user watched the following movies in order in the past, and rated them: [{string.Join(", ", hist)}] " +
                $"Based on the movies the user has watched, deduce if the user will like the movie ***{titles[rng.Next(titles.Length)]}***" +
                $"{(markers ? "[target]" : "")}. You should ONLY tell me yes or no.";
            requests.Add(new CtrRequest(prompt,
                instanceDim is { } dh ? Uniform(rng, dh, 1.5) : null,
                markers && crmDim is { } e ? [.. Enumerable.Range(0, items).Select(_ => Uniform(rng, e, 1.0))] : null,
                markers && crmDim is { } e2 ? Uniform(rng, e2, 1.0) : null));
        }
        return requests;
    }
}
