namespace Rellax.Runtime;

/// <summary>
/// A chat template: the text placed around the user's prompt before tokenization (BOS comes from the tokenizer).
/// The scored text is <c>Prefix + prompt + Suffix</c>, tokenized as one string, and the answer (" Yes"/" No")
/// follows it.
/// </summary>
/// <param name="Name">The name <see cref="Parse"/> accepts.</param>
/// <param name="Prefix">Text before the prompt.</param>
/// <param name="Suffix">Text after the prompt.</param>
public sealed record PromptTemplate(string Name, string Prefix, string Suffix)
{
    /// <summary>
    /// Vicuna v1.1 (the paper's base model; SPEC §1):
    /// <c>A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed,
    /// and polite answers to the user's questions. USER: {prompt} ASSISTANT:</c>.
    /// </summary>
    public static PromptTemplate Vicuna { get; } = new("vicuna",
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, " +
        "and polite answers to the user's questions. USER: ", " ASSISTANT:");

    /// <summary>No wrapping: the prompt as is (after BOS).</summary>
    public static PromptTemplate None { get; } = new("none", "", "");

    /// <summary>The names <see cref="Parse"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["vicuna", "none"];

    /// <summary>The template called <paramref name="name"/> (case-insensitive).</summary>
    /// <exception cref="ArgumentException">An unknown name; the message lists the known ones.</exception>
    public static PromptTemplate Parse(string name) => name?.ToLowerInvariant() switch
    {
        "vicuna" => Vicuna,
        "none" => None,
        _ => throw new ArgumentException($"unknown prompt template '{name}'; known: {string.Join(", ", Names)}", nameof(name)),
    };

    /// <summary>The text to tokenize for <paramref name="prompt"/>.</summary>
    public string Apply(string prompt) => Prefix + prompt + Suffix;
}
