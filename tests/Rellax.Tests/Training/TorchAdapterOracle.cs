using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;
using TorchSharp;
using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Training;

/// <summary>
/// One example as the oracle runs it. <see cref="OracleSample.Ids"/> holds the prompt's tokens (negative = SPA slots) and
/// then, for the BCE loss, the answers' common prefix, or for the LM loss, the whole answer continuation
/// <see cref="Answer"/> starting at <see cref="AnswerStart"/>.
/// </summary>
/// <param name="Sample">Tokens and vectors.</param>
/// <param name="Label">1 or 0.</param>
/// <param name="YesId">BCE: the yes answer's first token where it differs from the no answer.</param>
/// <param name="NoId">BCE: the no answer's.</param>
/// <param name="AnswerStart">LM: index in the ids of the first answer token (prompt length).</param>
/// <param name="Answer">LM: the answer's tokens as they follow the prompt (empty for BCE).</param>
internal sealed record OracleExample(OracleSample Sample, int Label, int YesId, int NoId, int AnswerStart, int[] Answer);

/// <summary>
/// Answer tokenization for the oracle, independent of <see cref="CtrScorer"/>'s: the whole templated text is encoded with and
/// without the answer (CtrScorer encodes only the piece after the last marker).
/// </summary>
internal static class OracleTokens
{
    /// <summary>
    /// The tokens <paramref name="answer"/> adds after <paramref name="text"/>: <c>Encode(text + answer)</c> after
    /// <c>Encode(text)</c>, which must be its prefix.
    /// </summary>
    /// <exception cref="InvalidOperationException">The answer merges with the end of the text.</exception>
    public static int[] Continuation(LlamaTokenizer tokenizer, string text, string answer)
    {
        var prompt = tokenizer.Encode(text);
        var all = tokenizer.Encode(text + answer);
        if (all.Count <= prompt.Count || !all.Take(prompt.Count).SequenceEqual(prompt))
            throw new InvalidOperationException($"the prompt's tokens are not a prefix of prompt + '{answer}'");
        return [.. all.Skip(prompt.Count)];
    }

    /// <summary>
    /// The tokens both continuations share (appended to the prompt when scoring) and the first tokens where they differ.
    /// </summary>
    public static (int[] CommonPrefix, int Yes, int No) AnswerTokens(LlamaTokenizer tokenizer, string text, string yes, string no)
    {
        int[] y = Continuation(tokenizer, text, yes), n = Continuation(tokenizer, text, no);
        int common = 0;
        while (common < y.Length && common < n.Length && y[common] == n[common]) common++;
        if (common >= Math.Min(y.Length, n.Length)) throw new InvalidOperationException($"'{yes}' and '{no}' do not differ in a token");
        return (y[..common], y[common], n[common]);
    }
}

/// <summary>
/// The training oracle: <see cref="TorchLlamaOracle"/> (float64 by default; left-padded batches) with a ReLLaX adapter whose
/// tensors, named by PEFT names, become autograd leaves on request, and the two losses of <see cref="AdapterTrainer"/>:
/// <list type="bullet">
/// <item>BCE: <c>p_yes = softmax([logit_No, logit_Yes])[1]</c> at the last position of prompt + the answers' common prefix;
/// loss = mean over the batch of <c>−[y log p_yes + (1 − y) log(1 − p_yes)]</c>;</item>
/// <item>LM: prompt + the label's answer continuation; cross-entropy over the whole vocabulary of each answer token given
/// the tokens before it; the mean over an example's answer tokens, then the mean over the batch (with answers of equal
/// token counts, as " Yes." and " No." are on the tokenizers here, this is also the mean over all answer tokens).</item>
/// </list>
/// Only the named tensors require gradients (the base model and the other adapter tensors are constants).
/// </summary>
internal sealed class TorchAdapterOracle
{
    private readonly TorchLlamaOracle _model;
    private readonly Dictionary<string, float[]> _tensors;

    /// <summary>The oracle over <paramref name="weights"/> with the adapter (<paramref name="targets"/>, <paramref name="projector"/>).</summary>
    /// <param name="config">The model's hyper-parameters.</param>
    /// <param name="weights">The model's tensors (exact values of its checkpoint dtype).</param>
    /// <param name="adapter">Rank, alpha (scale = alpha / r; rsLoRA not supported), markers.</param>
    /// <param name="targets">LoRA targets.</param>
    /// <param name="projector">The SPA projector, or null.</param>
    /// <param name="precision">Float64 for the oracle, Float32 for a baseline.</param>
    /// <param name="fusedAttention">SDPA instead of the explicit softmax (<see cref="TorchLlamaOracle.FusedAttention"/>).</param>
    public TorchAdapterOracle(OracleConfig config, OracleWeights weights, AdapterConfig adapter, IReadOnlyList<LoraTarget> targets,
        SpaProjectorWeights? projector, ScalarType precision = ScalarType.Float64, bool fusedAttention = false)
    {
        if (adapter.UseRsLora) throw new NotSupportedException("the oracle's scale is alpha / r");
        _model = new TorchLlamaOracle(config, weights, targets, projector, adapter.Alpha / adapter.Rank, precision) { FusedAttention = fusedAttention };
        Adapter = adapter;
        _tensors = NamedTensors(targets, projector);
    }

    /// <summary>
    /// The adapter's tensors by PEFT name (<c>base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight</c>,
    /// <c>....lora_gate.{0|1|3}.{weight|bias}</c>, <c>ctr_input_embedding_prj.{0|2}.{weight|bias}</c>): the arrays given, not copies.
    /// </summary>
    public static Dictionary<string, float[]> NamedTensors(IEnumerable<LoraTarget> targets, SpaProjectorWeights? projector)
    {
        var tensors = new Dictionary<string, float[]>();
        foreach (var t in targets)
        {
            string m = t.Module switch
            {
                LlamaModule.QProj => "self_attn.q_proj", LlamaModule.KProj => "self_attn.k_proj", LlamaModule.VProj => "self_attn.v_proj",
                LlamaModule.OProj => "self_attn.o_proj", LlamaModule.GateProj => "mlp.gate_proj", LlamaModule.UpProj => "mlp.up_proj",
                _ => "mlp.down_proj",
            };
            string p = $"base_model.model.model.layers.{t.Layer}.{m}.";
            tensors[p + "lora_A.weight"] = t.A;
            tensors[p + "lora_B.weight"] = t.B;
            if (t.Generator is { } g)
            {
                tensors[p + "lora_gate.0.weight"] = g.LnWeight;
                tensors[p + "lora_gate.0.bias"] = g.LnBias;
                tensors[p + "lora_gate.1.weight"] = g.W1;
                tensors[p + "lora_gate.1.bias"] = g.B1;
                tensors[p + "lora_gate.3.weight"] = g.W2;
                tensors[p + "lora_gate.3.bias"] = g.B2;
            }
        }
        if (projector is { } pr)
        {
            tensors["ctr_input_embedding_prj.0.weight"] = pr.W1;
            tensors["ctr_input_embedding_prj.0.bias"] = pr.B1;
            tensors["ctr_input_embedding_prj.2.weight"] = pr.W2;
            tensors["ctr_input_embedding_prj.2.bias"] = pr.B2;
        }
        return tensors;
    }

    /// <summary>The adapter's configuration.</summary>
    public AdapterConfig Adapter { get; }

    /// <summary>The model oracle (with the adapter).</summary>
    public TorchLlamaOracle Model => _model;

    /// <summary>Every adapter tensor by its PEFT name (the arrays given, not copies).</summary>
    public IReadOnlyDictionary<string, float[]> Tensors => _tensors;

    /// <summary>The names of the tensors that make up <paramref name="parts"/>, sorted.</summary>
    public string[] Names(AdapterParts parts) =>
        [.. _tensors.Keys.Where(n =>
            (parts.HasFlag(AdapterParts.Lora) && (n.EndsWith(".lora_A.weight", StringComparison.Ordinal) || n.EndsWith(".lora_B.weight", StringComparison.Ordinal)))
            || (parts.HasFlag(AdapterParts.Gate) && n.Contains(".lora_gate.", StringComparison.Ordinal))
            || (parts.HasFlag(AdapterParts.Projector) && n.StartsWith("ctr_input_embedding_prj.", StringComparison.Ordinal))).Order(StringComparer.Ordinal)];

    /// <summary>
    /// <paramref name="example"/> as the oracle runs it for <paramref name="loss"/>: the templated prompt tokenized with its
    /// markers as slots (BOS first), then the BCE answers' common prefix or the LM answer continuation of the label.
    /// </summary>
    public OracleExample Prepare(LlamaTokenizer tokenizer, CtrExample example, CtrLoss loss, AdapterTrainingOptions options)
    {
        string text = options.Scoring.Template.Apply(example.Request.Prompt);
        int[] prompt = tokenizer.EncodeWithMarkers(text, [Adapter.HistToken, Adapter.TargetToken]);
        var r = example.Request;
        if (loss == CtrLoss.Bce)
        {
            var (prefix, yes, no) = OracleTokens.AnswerTokens(tokenizer, text, options.Scoring.YesAnswer, options.Scoring.NoAnswer);
            return new OracleExample(new OracleSample([.. prompt, .. prefix], r.Instance, r.HistEmbeddings, r.TargetEmbedding), example.Label, yes, no, 0, []);
        }
        int[] answer = OracleTokens.Continuation(tokenizer, text, example.Label == 1 ? options.LmYes : options.LmNo);
        return new OracleExample(new OracleSample([.. prompt, .. answer], r.Instance, r.HistEmbeddings, r.TargetEmbedding), example.Label, -1, -1, prompt.Length, answer);
    }

    /// <summary>The batch's mean loss as a scalar tensor (in the caller's dispose scope), the batch run as one left-padded batch.</summary>
    public TorchTensor LossTensor(IReadOnlyList<OracleExample> batch, CtrLoss loss)
    {
        var hidden = _model.Hidden([.. batch.Select(e => e.Sample)]);                       // [B, T, H]
        int b = batch.Count, t = (int)hidden.shape[1], h = (int)hidden.shape[2];
        var head = _model.LmHead();                                                           // [V, H]
        if (loss == CtrLoss.Bce)
        {
            var d = YesMinusNo(hidden, head, batch);                                          // [B]
            var y = torch.tensor(batch.Select(e => (double)e.Label).ToArray()).to_type(_model.Precision);
            return -(y * torch.nn.functional.logsigmoid(d) + (1 - y) * torch.nn.functional.logsigmoid(-d)).mean();
        }
        var rows = new List<long>();
        var targets = new List<long>();
        var weights = new List<double>();
        for (int j = 0; j < b; j++)
        {
            var e = batch[j];
            int pad = t - e.Sample.Ids.Length;
            for (int k = 0; k < e.Answer.Length; k++)
            {
                rows.Add(j * t + pad + e.AnswerStart - 1 + k);                                // the position that predicts answer token k
                targets.Add(e.Answer[k]);
                weights.Add(1.0 / (b * e.Answer.Length));
            }
        }
        var logits = hidden.view(b * t, h).index_select(0, torch.tensor(rows.ToArray())).matmul(head.t());   // [N, V]
        var ce = logits.logsumexp(-1) - logits.gather(1, torch.tensor(targets.ToArray()).unsqueeze(1)).squeeze(1);
        return (ce * torch.tensor(weights.ToArray()).to_type(_model.Precision)).sum();
    }

    /// <summary>logit_Yes − logit_No at the last position of each prompt, [B].</summary>
    private static TorchTensor YesMinusNo(TorchTensor hidden, TorchTensor head, IReadOnlyList<OracleExample> batch)
    {
        var last = hidden.select(1, -1);                                                      // [B, H]
        var yes = head.index_select(0, torch.tensor(batch.Select(e => (long)e.YesId).ToArray()));
        var no = head.index_select(0, torch.tensor(batch.Select(e => (long)e.NoId).ToArray()));
        return (last * (yes - no)).sum(-1);
    }

    /// <summary>The batch's mean loss.</summary>
    public double Loss(IReadOnlyList<OracleExample> batch, CtrLoss loss)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return LossTensor(batch, loss).to_type(ScalarType.Float64).item<double>();
    }

    /// <summary>p_yes of each BCE example, in order.</summary>
    public double[] PYes(IReadOnlyList<OracleExample> batch)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var hidden = _model.Hidden([.. batch.Select(e => e.Sample)]);
        return YesMinusNo(hidden, _model.LmHead(), batch).sigmoid().to_type(ScalarType.Float64).data<double>().ToArray();
    }

    /// <summary>
    /// The batch's mean loss and its gradient with respect to each tensor of <paramref name="trained"/> (PEFT names), by
    /// autograd with only those tensors requiring gradients.
    /// </summary>
    public (double Loss, Dictionary<string, double[]> Grad) Gradients(IReadOnlyList<OracleExample> batch, CtrLoss loss, IEnumerable<string> trained)
    {
        using var scope = torch.NewDisposeScope();
        var leaves = Train(trained);
        try
        {
            var value = LossTensor(batch, loss);
            value.backward();
            var grads = leaves.ToDictionary(p => p.Key, p => p.Value.grad is { } g
                ? g.to_type(ScalarType.Float64).data<double>().ToArray()
                : new double[_tensors[p.Key].Length]);                                          // not reached by the loss: zero
            return (value.to_type(ScalarType.Float64).item<double>(), grads);
        }
        finally
        {
            _model.Overrides = null;
            foreach (var leaf in leaves.Values) leaf.Dispose();
        }
    }

    /// <summary>
    /// Makes the named tensors autograd leaves (copies of the arrays, of the oracle's precision, <c>requires_grad</c>) that
    /// replace the arrays in every later forward, until <see cref="TorchLlamaOracle.Overrides"/> is reset; returns them
    /// by name (for an optimizer).
    /// </summary>
    public Dictionary<string, TorchSharp.Modules.Parameter> Train(IEnumerable<string> names)
    {
        var leaves = new Dictionary<string, TorchSharp.Modules.Parameter>();
        _model.Overrides = new(ReferenceEqualityComparer.Instance);
        foreach (string n in names)
        {
            using (torch.NewDisposeScope())
                leaves[n] = new TorchSharp.Modules.Parameter(torch.tensor(_tensors[n]).to_type(_model.Precision).DetachFromDisposeScope(), requires_grad: true);
            leaves[n].DetachFromDisposeScope();
            _model.Overrides[_tensors[n]] = leaves[n];
        }
        return leaves;
    }

    /// <summary>
    /// Central finite difference of the batch's mean loss with respect to element <paramref name="index"/> of tensor
    /// <paramref name="name"/>, the element moved by ±<paramref name="step"/> in the oracle's precision (not rounded to f32).
    /// </summary>
    public double FiniteDifference(IReadOnlyList<OracleExample> batch, CtrLoss loss, string name, int index, double step)
    {
        double At(double delta)
        {
            using var scope = torch.NewDisposeScope();
            var moved = torch.tensor(_tensors[name]).to_type(_model.Precision);
            moved[index].add_(delta);
            _model.Overrides = new(ReferenceEqualityComparer.Instance) { [_tensors[name]] = moved };
            try { return Loss(batch, loss); }
            finally { _model.Overrides = null; }
        }
        return (At(step) - At(-step)) / (2 * step);
    }
}
