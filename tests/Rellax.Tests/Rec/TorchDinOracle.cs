using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Rec;

/// <summary>
/// An independent DIN in TorchSharp, written from SPEC §5 and laid out like the reference code's <c>ctr_base</c> DIN so
/// that its <c>state_dict</c> keys are the checkpoint's tensor names: <c>embed.embedding</c> (one table),
/// <c>hist_mapping</c> = Sequential(Linear(2E, E), ReLU), <c>attention_layer.attention_layer</c> = Sequential(MLPBlock,
/// Linear(A, 1)) where an MLPBlock's <c>dnn</c> holds (Linear, ReLU, Dropout) per layer, the tower <c>dnn.dnn</c> (an
/// MLPBlock) and <c>fc_out</c>. It runs on padded batches with a 0/1 history mask, literally as the reference does
/// (attention over the concatenation [t, h, t - h, t * h], scores multiplied by the mask, no softmax), in float64.
/// </summary>
internal sealed class TorchDin : Module
{
    // Field names are the module names (TorchSharp registers fields by name).
#pragma warning disable IDE1006, CA1051 // names must be the reference's snake_case module names
    public readonly TorchEmbeddings embed;
    public readonly Sequential hist_mapping;
    public readonly TorchDinAttention attention_layer;
    public readonly TorchMlpBlock dnn;
    public readonly Linear fc_out;
#pragma warning restore IDE1006, CA1051
    private readonly int _itemField;

    public TorchDin(long numFeatures, int embed, int fields, int itemField, int[] attentionSizes, int[] towerSizes) : base("DIN")
    {
        this.embed = new TorchEmbeddings(numFeatures, embed);
        hist_mapping = Sequential(Linear(2 * embed, embed), ReLU());
        attention_layer = new TorchDinAttention(embed, attentionSizes);
        dnn = new TorchMlpBlock((fields + 1) * embed, towerSizes);
        fc_out = Linear(towerSizes[^1], 1);
        _itemField = itemField;
        RegisterComponents();
    }

    /// <summary>The reference's forward with <c>out_layer = 'final'</c> (h_u) plus the logit.</summary>
    /// <param name="x">[B, F] table rows of the fields.</param>
    /// <param name="histIds">[B, L] table rows of the history items (any valid row where the mask is 0).</param>
    /// <param name="histRatings">[B, L] table rows of the history ratings.</param>
    /// <param name="histMask">[B, L] 1 for real positions, 0 for padding (float64).</param>
    public (TorchTensor States, TorchTensor Logits) Run(TorchTensor x, TorchTensor histIds, TorchTensor histRatings, TorchTensor histMask)
    {
        var feat = embed.embedding.forward(x);                                          // [B, F, E]
        var hist = torch.cat([embed.embedding.forward(histIds), embed.embedding.forward(histRatings)], -1);
        hist = hist_mapping.forward(hist);                                              // [B, L, E]
        var target = feat[.., _itemField, ..];                                          // [B, E]
        var interest = attention_layer.Run(target, hist, histMask);                     // [B, E]
        var towerInput = torch.cat([feat, interest.unsqueeze(1)], 1).flatten(1);        // [B, (F+1)E]
        var states = dnn.forward(towerInput);
        return (states, fc_out.forward(states).squeeze(-1));
    }
}

/// <summary>The reference's <c>Embeddings</c>: <c>embedding</c> (dropout omitted: evaluation mode).</summary>
internal sealed class TorchEmbeddings : Module
{
#pragma warning disable IDE1006, CA1051
    public readonly Embedding embedding;
#pragma warning restore IDE1006, CA1051

    public TorchEmbeddings(long numFeatures, int embed) : base("Embeddings")
    {
        embedding = Embedding(numFeatures, embed);
        RegisterComponents();
    }
}

/// <summary>The reference's <c>MLPBlock</c>: <c>dnn</c> = Sequential of (Linear, ReLU, Dropout) per layer.</summary>
internal sealed class TorchMlpBlock : Module<TorchTensor, TorchTensor>
{
#pragma warning disable IDE1006, CA1051
    public readonly Sequential dnn;
#pragma warning restore IDE1006, CA1051

    public TorchMlpBlock(int input, int[] sizes) : base("MLPBlock")
    {
        var layers = new List<Module<TorchTensor, TorchTensor>>();
        foreach (int size in sizes)
        {
            layers.Add(Linear(input, size));
            layers.Add(ReLU());
            layers.Add(Dropout(0.0));
            input = size;
        }
        dnn = Sequential(layers);
        RegisterComponents();
    }

    public override TorchTensor forward(TorchTensor input) => dnn.forward(input);
}

/// <summary>The reference's <c>DIN_Attention</c> (no softmax): <c>attention_layer</c> = Sequential(MLPBlock, Linear(A, 1)).</summary>
internal sealed class TorchDinAttention : Module
{
#pragma warning disable IDE1006, CA1051
    public readonly Sequential attention_layer;
#pragma warning restore IDE1006, CA1051
    private readonly int _embed;

    public TorchDinAttention(int embed, int[] sizes) : base("DIN_Attention")
    {
        _embed = embed;
        attention_layer = Sequential(new TorchMlpBlock(4 * embed, sizes), Linear(sizes[^1], 1));
        RegisterComponents();
    }

    public TorchTensor Run(TorchTensor target, TorchTensor hist, TorchTensor mask)
    {
        long length = hist.shape[1];
        var t = target.unsqueeze(1).expand(-1, length, -1);
        var input = torch.cat([t, hist, t - hist, t * hist], -1);
        var weight = attention_layer.forward(input.view(-1, 4 * _embed)).view(-1, length) * mask;
        return (weight.unsqueeze(-1) * hist).sum(1);
    }
}
