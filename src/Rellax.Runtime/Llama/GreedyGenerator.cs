namespace Rellax.Runtime;

/// <summary>Greedy (arg-max) text generation over a <see cref="LlamaSession"/>'s KV cache.</summary>
public static class GreedyGenerator
{
    /// <summary>
    /// Feeds <paramref name="prompt"/> (one prefill pass) and then yields up to <paramref name="maxNewTokens"/>
    /// greedily chosen tokens, one forward pass of a single token each. Stops after yielding a token in
    /// <paramref name="stopTokens"/> (the stop token is yielded) or when the session's cache is full.
    /// </summary>
    /// <param name="session">A session; generation continues after whatever it already consumed.</param>
    /// <param name="prompt">Token ids to condition on (at least one, e.g. BOS).</param>
    /// <param name="maxNewTokens">Upper bound on generated tokens, &gt;= 0.</param>
    /// <param name="stopTokens">Ids that end generation (usually the EOS ids).</param>
    /// <param name="cancellationToken">Checked before the prefill and before each token's forward pass; enumeration then
    /// throws <see cref="OperationCanceledException"/>. (Progress is the enumeration itself: one token per item.)</param>
    public static IEnumerable<int> Generate(LlamaSession session, IReadOnlyList<int> prompt, int maxNewTokens, IReadOnlyCollection<int> stopTokens,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(stopTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        if (prompt.Count == 0) throw new ArgumentException("the prompt needs at least one token (e.g. BOS)", nameof(prompt));
        return Iterate(session, prompt.ToArray(), maxNewTokens, stopTokens, cancellationToken);
    }

    private static IEnumerable<int> Iterate(LlamaSession session, int[] prompt, int maxNewTokens, IReadOnlyCollection<int> stopTokens,
        CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (maxNewTokens == 0) yield break;
        var logits = session.Forward(prompt);
        for (int produced = 0; ;)
        {
            int next = ArgMax(logits);
            yield return next;
            if (++produced >= maxNewTokens || stopTokens.Contains(next) || session.Position >= session.MaxPositions) yield break;
            cancellationToken.ThrowIfCancellationRequested();
            session.Forward([next], logits);
        }
    }

    /// <summary>Index of the largest value; the lowest index wins ties (as torch.argmax). NaN is never chosen over a number.</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) throw new ArgumentException("no values", nameof(values));
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best] || float.IsNaN(values[best])) best = i;
        return best;
    }
}
