namespace Rellax.Kernels;

/// <summary>
/// One backend's SUBR top-K kernel. Arguments arrive checked by <see cref="SubrTopK"/>: the table is finite, every
/// history and target row is in [0, N), the offsets are non-decreasing, 1 ≤ k ≤ <see cref="SubrTopK.MaxK"/>, and
/// all tensors are contiguous and on this backend. Kernels may run asynchronously.
/// </summary>
internal interface ISubrKernels
{
    /// <summary>
    /// For every sample b with history <c>h = history[offsets[b] .. offsets[b+1])</c> (L = its length) and target
    /// row <c>t = targets[b]</c>: the score of position p is <see cref="SubrTopK"/>'s score of (t, h[p]); keep the
    /// n = min(L, k) positions that are best in the order (score descending, then position descending: the more
    /// recent event wins a tie), and write them to <c>positions[b, 0..n)</c> with their scores, sorted by
    /// position ascending when <paramref name="byScore"/> is false, else in that best-first order. Slots n..k-1
    /// get position -1 and score NaN. The B × L score matrix is never written to memory.
    /// </summary>
    /// <param name="table">Item embeddings [N, d]: f32, f16, or i8 (then <paramref name="scales"/> holds the row scales).</param>
    /// <param name="scales">f32 [N], the dequantisation scale of each i8 row; a default tensor for f32 and f16 tables.</param>
    /// <param name="history">i32 [total]: table rows of all histories, one after another, each in time order.</param>
    /// <param name="offsets">i32 [B + 1]: history b is <c>history[offsets[b] .. offsets[b + 1])</c>; offsets[0] = 0.</param>
    /// <param name="targets">i32 [B]: the target row of each sample.</param>
    /// <param name="k">Items to keep per sample, 1 to <see cref="SubrTopK.MaxK"/>.</param>
    /// <param name="byScore">Output order: best first (true) or chronological (false).</param>
    /// <param name="positions">i32 [B, k], output: positions in the sample's history (0 = oldest).</param>
    /// <param name="scores">f32 [B, k], output: the scores of those positions.</param>
    void TopK(Tensor table, Tensor scales, Tensor history, Tensor offsets, Tensor targets, int k, bool byScore,
        Tensor positions, Tensor scores);
}
