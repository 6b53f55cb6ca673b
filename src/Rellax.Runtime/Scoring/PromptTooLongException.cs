using System.Globalization;

namespace Rellax.Runtime;

/// <summary>
/// A prompt (or item text) needs more tokens than the model's context. Thrown by <see cref="CtrScorer.Validate"/>, so a
/// caller can add its own advice (a smaller K, <c>--template none</c>) by type, not by reading the message.
/// </summary>
public sealed class PromptTooLongException : ArgumentException
{
    /// <summary>Creates the error.</summary>
    /// <param name="tokens">The prompt's tokens, or a lower bound when tokenization stopped at the limit.</param>
    /// <param name="exact">Whether <paramref name="tokens"/> is the exact count.</param>
    /// <param name="maxTokens">The model's context in tokens.</param>
    /// <param name="context">What the context is, e.g. <c>max_position_embeddings = 512</c>.</param>
    public PromptTooLongException(long tokens, bool exact, int maxTokens, string context)
        : base(string.Create(CultureInfo.InvariantCulture,
            $"the prompt is {(exact ? "" : "at least ")}{tokens} tokens long, more than the model's {context}{(exact ? "" : " (tokenization stopped there)")}"))
    {
        Tokens = tokens;
        Exact = exact;
        MaxTokens = maxTokens;
    }

    /// <summary>The prompt's tokens (BOS included), or a lower bound when <see cref="Exact"/> is false.</summary>
    public long Tokens { get; }

    /// <summary>Whether <see cref="Tokens"/> is the exact count.</summary>
    public bool Exact { get; }

    /// <summary>The most tokens the model takes.</summary>
    public int MaxTokens { get; }
}
