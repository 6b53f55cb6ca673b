using System.Numerics.Tensors;

namespace Rellax.Rec;

/// <summary>
/// The small dense linear algebra <see cref="Pca"/> runs on the host in double precision: a cyclic Jacobi
/// eigensolver, a Cholesky factorisation with a pivot guard, a lower-triangular inverse, row Grams and row
/// combinations, and the seeded Gaussian generator. Every matrix here is at most l × l or l × D (l = k + p ≤ ~1100,
/// D ≤ ~8192), so none of it is on the O(N·D·l) critical path; the big products run on the backend's GEMM.
/// All matrices are row-major.
/// </summary>
internal static class PcaMath
{
    /// <summary>
    /// Eigendecomposition of a symmetric matrix by cyclic Jacobi rotations: <c>A = Vᵀ diag(λ) V</c>, eigenvalues
    /// sorted descending (ties keep index order), eigenvector i in row i of <paramref name="vectors"/>.
    /// <para>
    /// Rotations are skipped when <c>|a_pq| ≤ 1e-15 · sqrt(|a_pp · a_qq|)</c> (the relative criterion of Demmel and
    /// Veselić, which keeps small eigenvalues of a positive semi-definite matrix accurate relative to themselves); the
    /// solver stops after a sweep with no rotation (typically 6 to 10 sweeps; at most 100). A rotation updates rows
    /// p and q with vector operations and mirrors them into columns p and q (the matrix is kept fully symmetric), so one
    /// sweep costs about 3·n³ multiply-adds plus n³ strided stores: ~0.2 s at n = 522, ~4 ms at n = 138.
    /// </para>
    /// </summary>
    /// <param name="a">Symmetric matrix, double [n, n]; destroyed (its diagonal ends as the unsorted eigenvalues).</param>
    /// <param name="n">Order.</param>
    /// <param name="values">Output eigenvalues, double [n], descending.</param>
    /// <param name="vectors">Output orthonormal eigenvectors, double [n, n], one per row, in the order of <paramref name="values"/>.</param>
    public static void SymmetricEigen(double[] a, int n, double[] values, double[] vectors)
    {
        var v = new double[n * n];
        for (int i = 0; i < n; i++) v[i * n + i] = 1;
        for (int sweep = 0; sweep < 100; sweep++)
        {
            bool rotated = false;
            for (int p = 0; p < n - 1; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    double apq = a[p * n + q];
                    double app = a[p * n + p], aqq = a[q * n + q];
                    if (apq == 0 || Math.Abs(apq) <= 1e-15 * Math.Sqrt(Math.Abs(app * aqq))) continue;
                    rotated = true;
                    double theta = (aqq - app) / (2 * apq);
                    double t = Math.Abs(theta) > 1e100
                        ? 0.5 / theta
                        : (theta >= 0 ? 1.0 : -1.0) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    var rp = a.AsSpan(p * n, n);
                    var rq = a.AsSpan(q * n, n);
                    Rotate(rp, rq, c, s);
                    for (int r = 0; r < n; r++)
                    {
                        a[r * n + p] = rp[r];
                        a[r * n + q] = rq[r];
                    }
                    a[p * n + p] = app - t * apq;
                    a[q * n + q] = aqq + t * apq;
                    a[p * n + q] = 0;
                    a[q * n + p] = 0;
                    Rotate(v.AsSpan(p * n, n), v.AsSpan(q * n, n), c, s);
                }
            }
            if (!rotated) break;
        }
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        var diag = new double[n];
        for (int i = 0; i < n; i++) diag[i] = a[i * n + i];
        Array.Sort(order, (x, y) => diag[y] != diag[x] ? diag[y].CompareTo(diag[x]) : x.CompareTo(y));
        for (int i = 0; i < n; i++)
        {
            values[i] = diag[order[i]];
            v.AsSpan(order[i] * n, n).CopyTo(vectors.AsSpan(i * n, n));
        }
    }

    /// <summary><c>(x, y) ← (c·x − s·y, s·x + c·y)</c>, elementwise.</summary>
    private static void Rotate(Span<double> x, Span<double> y, double c, double s)
    {
        int i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            var vc = new System.Numerics.Vector<double>(c);
            var vs = new System.Numerics.Vector<double>(s);
            int w = System.Numerics.Vector<double>.Count;
            for (; i + w <= x.Length; i += w)
            {
                var a = new System.Numerics.Vector<double>(x[i..]);
                var b = new System.Numerics.Vector<double>(y[i..]);
                (vc * a - vs * b).CopyTo(x[i..]);
                (vs * a + vc * b).CopyTo(y[i..]);
            }
        }
        for (; i < x.Length; i++)
        {
            double a = x[i], b = y[i];
            x[i] = c * a - s * b;
            y[i] = s * a + c * b;
        }
    }

    /// <summary>
    /// Cholesky factorisation <c>G = L Lᵀ</c> of a symmetric matrix with unit diagonal (a column-scaled Gram matrix),
    /// refusing (returning false) when a pivot falls to <paramref name="minPivot"/> or below, i.e. when a column has
    /// less than √minPivot of its norm outside the span of the columns before it.
    /// </summary>
    /// <param name="g">double [n, n], read only.</param>
    /// <param name="n">Order.</param>
    /// <param name="minPivot">Smallest acceptable pivot (relative, since the diagonal is 1).</param>
    /// <param name="l">Output lower-triangular factor, double [n, n] (upper part zero).</param>
    public static bool Cholesky(ReadOnlySpan<double> g, int n, double minPivot, double[] l)
    {
        Array.Clear(l, 0, n * n);
        for (int j = 0; j < n; j++)
        {
            var lj = l.AsSpan(j * n, j);
            for (int i = 0; i < j; i++)
                l[j * n + i] = (g[j * n + i] - TensorPrimitives.Dot<double>(lj[..i], l.AsSpan(i * n, i))) / l[i * n + i];
            double pivot = g[j * n + j] - TensorPrimitives.Dot<double>(lj, lj);
            if (!(pivot > minPivot)) return false;
            l[j * n + j] = Math.Sqrt(pivot);
        }
        return true;
    }

    /// <summary>Inverse of a lower-triangular matrix with a positive diagonal, by rows: <c>L⁻¹[j] = (e_j − Σ_{k&lt;j} L[j,k] L⁻¹[k]) / L[j,j]</c>.</summary>
    /// <param name="l">double [n, n], lower triangular.</param>
    /// <param name="n">Order.</param>
    /// <returns>L⁻¹, double [n, n], lower triangular.</returns>
    public static double[] InvertLower(double[] l, int n)
    {
        var inv = new double[n * n];
        for (int j = 0; j < n; j++)
        {
            var row = inv.AsSpan(j * n, j + 1);
            row[j] = 1;
            for (int k = 0; k < j; k++)
            {
                double f = l[j * n + k];
                if (f != 0) TensorPrimitives.MultiplyAdd(inv.AsSpan(k * n, j + 1), -f, row, row);
            }
            TensorPrimitives.Divide(row, l[j * n + j], row);
        }
        return inv;
    }

    /// <summary><c>G = A Aᵀ</c> for A double [rows, cols]: G double [rows, rows], both triangles filled; parallel over rows.</summary>
    public static double[] GramOfRows(double[] a, int rows, int cols, ParallelOptions parallel)
    {
        var g = new double[rows * rows];
        Parallel.For(0, rows, parallel, i =>
        {
            var ai = a.AsSpan(i * cols, cols);
            for (int j = 0; j <= i; j++)
            {
                double d = TensorPrimitives.Dot<double>(ai, a.AsSpan(j * cols, cols));
                g[i * rows + j] = d;
                g[j * rows + i] = d;
            }
        });
        return g;
    }

    /// <summary>
    /// Row combinations <c>C = T A</c>: C double [outRows, cols], row j = Σ_i T[j, i] · A[i]; parallel over output rows.
    /// </summary>
    /// <param name="t">double [outRows, inRows].</param>
    /// <param name="outRows">Rows of the result.</param>
    /// <param name="a">double [inRows, cols].</param>
    /// <param name="inRows">Rows of <paramref name="a"/>.</param>
    /// <param name="cols">Columns of <paramref name="a"/> and of the result.</param>
    /// <param name="parallel">Host threads.</param>
    public static double[] CombineRows(double[] t, int outRows, double[] a, int inRows, int cols, ParallelOptions parallel)
    {
        var c = new double[(long)outRows * cols];
        Parallel.For(0, outRows, parallel, j =>
        {
            var cj = c.AsSpan(j * cols, cols);
            for (int i = 0; i < inRows; i++)
            {
                double f = t[j * inRows + i];
                if (f != 0) TensorPrimitives.MultiplyAdd(a.AsSpan(i * cols, cols), f, cj, cj);
            }
        });
        return c;
    }
}
