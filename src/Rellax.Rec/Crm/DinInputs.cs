using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// Exports samples encoded with a <see cref="DinConfig"/>'s feature layout in the form the reference code's DIN takes
/// (<c>CTR_model(X, Y, hist_ids, hist_ratings, hist_mask)</c>), so that a DIN can be trained in Python on exactly the
/// encoding <see cref="DinModel.Featurize"/> uses, and its weights then run here.
/// </summary>
/// <remarks>
/// <para>File (safetensors), every id already a row of the one embedding table (offsets added; the reference's dataset
/// class adds them itself when it reads its h5 files, so feed these tensors to the model directly):</para>
/// <list type="table">
/// <listheader><term>tensor</term><description>dtype and shape</description></listheader>
/// <item><term><c>X</c></term><description>I64 [S, F]: the field rows, fields in config order</description></item>
/// <item><term><c>Y</c></term><description>I64 [S]: the label, 1 when the target rating is positive</description></item>
/// <item><term><c>hist_ids</c></term><description>I64 [S, K]: the history items' rows in the item field, oldest first,
/// padded at the end with the item field's first row</description></item>
/// <item><term><c>hist_ratings</c></term><description>I64 [S, K]: the history ratings' rows, padded with the first rating
/// row</description></item>
/// <item><term><c>hist_mask</c></term><description>I64 [S, K]: 1 for a real event, 0 for padding</description></item>
/// <item><term><c>sample_ids</c></term><description>I64 [S]: <see cref="ReLLaSample.Index"/> of each row</description></item>
/// </list>
/// <para>K = the longest window (at most <c>maxHistory</c>: the most recent events). Metadata: <c>format</c> =
/// <c>rellax-din-inputs</c>, <c>din_config</c> = the config's <c>config.json</c> text (its <c>num_features</c>,
/// <c>num_fields</c>, <c>item_field_idx</c> and <c>embed_size</c> are the reference <c>ctr_config</c>'s; write that text as
/// <c>config.json</c> next to the trained <c>model.safetensors</c>, with <c>attention_hidden_sizes</c> =
/// <c>num_attn_layers</c> × [<c>hidden_size</c>] and <c>hidden_sizes</c> = <c>num_hidden_layers</c> ×
/// [<c>hidden_size</c>] of the trained model).</para>
/// </remarks>
public static class DinInputs
{
    /// <summary>The <c>format</c> metadata value.</summary>
    public const string FormatName = "rellax-din-inputs";

    /// <summary>Encodes <paramref name="samples"/> with <paramref name="config"/>'s layout and writes the file (atomically).</summary>
    /// <param name="config">The layout; it must fit the set's dataset (<see cref="DinConfig.CheckFits"/>).</param>
    /// <param name="set">The sample set.</param>
    /// <param name="samples">Samples of <paramref name="set"/>.</param>
    /// <param name="maxHistory">The most recent events kept per sample (at least 1).</param>
    /// <param name="path">The <c>.safetensors</c> file to write.</param>
    /// <exception cref="ArgumentException">The layout does not fit, or a sample is not one of the set's.</exception>
    public static void Write(DinConfig config, SampleSet set, IReadOnlyList<ReLLaSample> samples, int maxHistory, string path)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxHistory, 1);
        ArgumentException.ThrowIfNullOrEmpty(path);
        var encoding = DinEncoding.Create(config, set.Dataset);
        int fields = config.Fields.Count, count = samples.Count;
        int k = 1;
        foreach (var x in samples)
        {
            if ((uint)x.Index >= (uint)set.Samples.Count || set.Samples[x.Index] != x)
                throw new ArgumentException($"sample index {x.Index} is not a sample of this set", nameof(samples));
            k = Math.Max(k, Math.Min(maxHistory, x.HistoryLength));
        }
        var xRows = new long[(long)count * fields];
        var labels = new long[count];
        var ids = new long[(long)count * k];
        var ratings = new long[(long)count * k];
        var mask = new long[(long)count * k];
        var sampleIds = new long[count];
        var fieldRows = new int[fields];
        int firstRating = config.RatingOffset;
        for (int s = 0; s < count; s++)
        {
            var x = samples[s];
            encoding.FieldRows(x.User, x.Item, fieldRows);
            for (int f = 0; f < fields; f++) xRows[(long)s * fields + f] = fieldRows[f];
            labels[s] = x.Label ? 1 : 0;
            sampleIds[s] = x.Index;
            var history = set.History(x);
            if (history.Length > maxHistory) history = history[^maxHistory..];
            for (int j = 0; j < k; j++)
            {
                long at = (long)s * k + j;
                bool real = j < history.Length;
                ids[at] = real ? encoding.ItemOffset + history[j].Item : encoding.ItemOffset;
                ratings[at] = real ? encoding.RatingRow(history[j].Value) : firstRating;
                mask[at] = real ? 1 : 0;
            }
        }
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = FormatName;
        writer.Metadata["din_config"] = config.ToJson();
        writer.Add<long>("X", SafeTensorDType.I64, [count, fields], xRows);
        writer.Add<long>("Y", SafeTensorDType.I64, [count], labels);
        writer.Add<long>("hist_ids", SafeTensorDType.I64, [count, k], ids);
        writer.Add<long>("hist_ratings", SafeTensorDType.I64, [count, k], ratings);
        writer.Add<long>("hist_mask", SafeTensorDType.I64, [count, k], mask);
        writer.Add<long>("sample_ids", SafeTensorDType.I64, [count], sampleIds);
        writer.Save(path);
    }
}
