using System.Text;

namespace Rellax.Rec;

/// <summary>
/// Training files in the reference code's format, so people who fine-tune in Python can use our preparation.
/// <para><b>Format (JSON Lines, UTF-8, ASCII-only content).</b> One record per line, each line exactly what Python's
/// <c>json.dumps({"input": prompt, "output": answer})</c> prints, followed by <c>\n</c>:</para>
/// <code>{"input": "The user is a male. His job is ...\nYou should ONLY tell me yes or no.", "output": "Yes."}</code>
/// <list type="bullet">
/// <item><c>input</c>: the prompt text (<see cref="ReLLaPrompt.Text"/>, without the chat template, which the
/// reference's <c>finetune.py</c> adds when it tokenizes);</item>
/// <item><c>output</c>: <c>"Yes."</c> for a positive label, <c>"No."</c> for a negative one (<c>data2json.py</c>);</item>
/// <item>keys in that order, separators <c>", "</c> and <c>": "</c>, strings escaped as <c>json.dumps</c> does with its
/// default <c>ensure_ascii=True</c> (which <c>data2json.py</c> keeps): non-ASCII characters become <c>\uhhhh</c>
/// (see <see cref="PythonText.AppendJsonString"/>), so the file is plain ASCII and reads back to the same strings.</item>
/// </list>
/// <para>The reference writes a JSON array (<c>json.dump(list, f, indent=4)</c>) rather than JSON Lines; both load with
/// the Hugging Face <c>datasets.load_dataset("json", data_files=...)</c> call its <c>finetune.py</c> makes, and each
/// record is the same.</para>
/// <para><b>ReiT mixed set</b> (<see cref="WriteMixed"/>): the reference's <c>training_set_construction.py</c> calls
/// <c>random.seed(42)</c>, draws <c>random.sample(range(len(train_set)), 70000)</c> (as written, the script is missing a
/// parenthesis there), takes those rows, in the drawn order, from the recent-K (<c>simple</c>) and the SUBR-K
/// (<c>sequential</c>) training files, and interleaves them: row 1 simple, row 1 sequential, row 2 simple, ... Its
/// <c>finetune.py</c> then doubles <c>train_size</c> for the mixed set and takes the first <c>2·train_size</c> records.
/// We draw the rows with the same Python generator (<see cref="SampleRows"/>), so the same seed over the same training
/// split picks the same rows in the same order.</para>
/// <para>Writers write to a <see cref="TextWriter"/> and never close it; the caller owns the file (and makes it atomic).</para>
/// </summary>
public static class TrainingFile
{
    /// <summary>The <c>output</c> of a positive sample.</summary>
    public const string PositiveOutput = "Yes.";

    /// <summary>The <c>output</c> of a negative sample.</summary>
    public const string NegativeOutput = "No.";

    /// <summary>One record without its line break: <c>{"input": ..., "output": "Yes."|"No."}</c>.</summary>
    public static string Line(string input, bool label)
    {
        ArgumentNullException.ThrowIfNull(input);
        return AppendLine(new StringBuilder(input.Length + input.Length / 8 + 40), input, label).ToString();
    }

    /// <summary>Writes the line of <paramref name="prompt"/> (its text and label) and a <c>\n</c>.</summary>
    public static void Write(TextWriter writer, ReLLaPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(prompt);
        var sb = t_line ??= new StringBuilder(4096);
        sb.Clear();
        AppendLine(sb, prompt.Text, prompt.Label).Append('\n');
        writer.Write(sb);
        if (sb.Capacity > 1 << 20) t_line = null; // do not keep a huge buffer alive
    }

    [ThreadStatic] private static StringBuilder? t_line;

    private static StringBuilder AppendLine(StringBuilder sb, string input, bool label)
    {
        sb.Append("{\"input\": ");
        PythonText.AppendJsonString(sb, input);
        return sb.Append(", \"output\": \"").Append(label ? PositiveOutput : NegativeOutput).Append("\"}");
    }

    /// <summary>Writes one line per prompt, in order (a plain, non-mixed training or test file).</summary>
    /// <returns>The number of lines written.</returns>
    public static int WriteAll(TextWriter writer, IEnumerable<ReLLaPrompt> prompts)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(prompts);
        int n = 0;
        foreach (var p in prompts)
        {
            Write(writer, p);
            n++;
        }
        return n;
    }

    /// <summary>
    /// The rows the reference's <c>random.seed(seed); random.sample(range(population), count)</c> picks, in its order
    /// (CPython 3's Mersenne Twister and sampling algorithm reproduced exactly: see <see cref="PythonRandom"/>).
    /// </summary>
    /// <param name="population">Number of rows to choose from (≥ 0).</param>
    /// <param name="count">Rows to draw, 0 to <paramref name="population"/>.</param>
    /// <param name="seed">Python's seed; the reference uses 42. Python seeds with the absolute value, so −s and s agree.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or more than <paramref name="population"/>.</exception>
    public static int[] SampleRows(int population, int count, long seed = 42) => new PythonRandom(seed).Sample(population, count);

    /// <summary>
    /// Writes the ReiT mixed training set: draws <paramref name="count"/> rows of <paramref name="samples"/> with
    /// <see cref="SampleRows"/> and, for each in the drawn order, writes the recent-K prompt, then the SUBR-K prompt of the
    /// same sample (2 · <paramref name="count"/> lines).
    /// </summary>
    /// <param name="writer">Where the lines go.</param>
    /// <param name="builder">Renders the prompts (its options decide SPA markers).</param>
    /// <param name="samples">The rows to draw from, usually the training split in global order
    /// (<c>set.InSplit(SampleSplit.Train).ToArray()</c>); each must be a sample of <paramref name="builder"/>'s set.</param>
    /// <param name="count">Rows to draw (the reference: 70,000), at most <c>samples.Count</c>.</param>
    /// <param name="seed">The sampling seed (the reference: 42).</param>
    /// <param name="recentPositions">History positions of the recent-K prompt of a sample (e.g.
    /// <c>s =&gt; ReLLaPromptBuilder.RecentPositions(s.HistoryLength, k)</c>).</param>
    /// <param name="subrPositions">History positions of the SUBR-K prompt of a sample, in prompt order.</param>
    /// <returns>The drawn rows (indices into <paramref name="samples"/>), in the order written.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A bad <paramref name="count"/>, or a provider returned a position
    /// outside the sample's history (the message names the sample).</exception>
    public static int[] WriteMixed(TextWriter writer, ReLLaPromptBuilder builder, IReadOnlyList<ReLLaSample> samples, int count,
        long seed, Func<ReLLaSample, int[]> recentPositions, Func<ReLLaSample, int[]> subrPositions)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(recentPositions);
        ArgumentNullException.ThrowIfNull(subrPositions);
        if (count < 0 || count > samples.Count)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"cannot draw {count} rows from {samples.Count} samples");
        var rows = SampleRows(samples.Count, count, seed);
        foreach (int row in rows)
        {
            var s = samples[row];
            Write(writer, builder.Build(s, recentPositions(s) ?? throw new InvalidOperationException($"recentPositions returned null for sample {s.Index}")));
            Write(writer, builder.Build(s, subrPositions(s) ?? throw new InvalidOperationException($"subrPositions returned null for sample {s.Index}")));
        }
        return rows;
    }
}
