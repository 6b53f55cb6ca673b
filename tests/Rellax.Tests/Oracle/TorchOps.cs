using TorchSharp;
using static TorchSharp.torch;

namespace Rellax.Tests.Oracle;

/// <summary>The primitives written with TorchSharp ops (fp32 on the CPU), as an independent oracle.</summary>
internal static class TorchOps
{
    public static Tensor T(float[] data, params long[] shape) => torch.tensor(data, shape, dtype: float32);

    public static float[] Data(Tensor t) => t.contiguous().data<float>().ToArray();

    public static float[] MatMul(float[] x, float[] w, int m, int k, int n)
    {
        using var scope = torch.NewDisposeScope();
        return Data(T(x, m, k).mm(T(w, n, k).t()));
    }

    /// <summary>torch.nn.functional.linear: y = x wᵀ + bias (bias may be null), fp32.</summary>
    public static float[] Linear(float[] x, float[] w, float[]? bias, int m, int k, int n)
    {
        using var scope = torch.NewDisposeScope();
        return Data(nn.functional.linear(T(x, m, k), T(w, n, k), bias is null ? null : T(bias, n)));
    }

    /// <summary>index_copy_ along rows: dst[rows[i]] = src[i].</summary>
    public static float[] ScatterRows(float[] src, int[] rows, float[] dst, int h)
    {
        using var scope = torch.NewDisposeScope();
        var d = T(dst, dst.Length / h, h);
        var idx = torch.tensor(rows.Select(i => (long)i).ToArray(), dtype: int64);
        return Data(d.index_copy(0, idx, T(src, src.Length / h, h)));
    }

    public static float[] RmsNorm(float[] x, float[] weight, float eps, int n)
    {
        using var scope = torch.NewDisposeScope();
        var xt = T(x, x.Length / n, n);
        var ms = xt.pow(2).mean([-1L], keepdim: true);
        return Data(xt * torch.rsqrt(ms + eps) * T(weight, n));
    }

    public static float[] LayerNorm(float[] x, float[] weight, float[] bias, float eps, int n)
    {
        using var scope = torch.NewDisposeScope();
        return Data(nn.functional.layer_norm(T(x, x.Length / n, n), [n], T(weight, n), T(bias, n), eps));
    }

    /// <summary>HF apply_rotary_pos_emb: x·cos + rotate_half(x)·sin with cos/sin repeated over both halves.</summary>
    public static float[] Rope(float[] x, int[] positions, float[] cos, float[] sin, int t, int h, int d)
    {
        using var scope = torch.NewDisposeScope();
        int half = d / 2;
        var xt = T(x, t, h, d);
        var idx = torch.tensor(positions.Select(p => (long)p).ToArray(), dtype: int64);
        var c = T(cos, cos.Length / half, half).index_select(0, idx);
        var s = T(sin, sin.Length / half, half).index_select(0, idx);
        c = torch.cat([c, c], -1).unsqueeze(1);
        s = torch.cat([s, s], -1).unsqueeze(1);
        var x1 = xt[.., .., ..half];
        var x2 = xt[.., .., half..];
        var rotated = torch.cat([-x2, x1], -1);
        return Data(xt * c + rotated * s);
    }

    public static float[] SwiGlu(float[] gate, float[] up)
    {
        using var scope = torch.NewDisposeScope();
        return Data(nn.functional.silu(T(gate, gate.Length)) * T(up, up.Length));
    }

    public static float[] Gelu(float[] x)
    {
        using var scope = torch.NewDisposeScope();
        return Data(nn.functional.gelu(T(x, x.Length)));
    }

    public static float[] Softmax(float[] x, int n)
    {
        using var scope = torch.NewDisposeScope();
        return Data(nn.functional.softmax(T(x, x.Length / n, n), -1));
    }

    /// <summary>Explicit GQA attention: KV heads repeated with repeat_interleave, additive -inf causal mask.</summary>
    public static float[] Attention(float[] q, float[] k, float[] v, int t, int s, int hq, int hkv, int d, float scale, bool causal)
    {
        using var scope = torch.NewDisposeScope();
        var qt = T(q, t, hq, d).transpose(0, 1);                                   // [Hq, T, D]
        var kt = T(k, s, hkv, d).transpose(0, 1).repeat_interleave(hq / hkv, 0);   // [Hq, S, D]
        var vt = T(v, s, hkv, d).transpose(0, 1).repeat_interleave(hq / hkv, 0);
        var scores = torch.matmul(qt, kt.transpose(1, 2)) * scale;                  // [Hq, T, S]
        if (causal)
        {
            // Query i (absolute position s - t + i) may not see key j > s - t + i.
            var mask = torch.ones(t, s, dtype: ScalarType.Bool).triu(s - t + 1);
            scores = scores.masked_fill(mask, float.NegativeInfinity);
        }
        var o = torch.matmul(nn.functional.softmax(scores, -1), vt);                // [Hq, T, D]
        return Data(o.transpose(0, 1));
    }

    public static float[] Embedding(int[] ids, float[] table, int h)
    {
        using var scope = torch.NewDisposeScope();
        var idx = torch.tensor(ids.Select(i => (long)i).ToArray(), dtype: int64);
        return Data(T(table, table.Length / h, h).index_select(0, idx));
    }

    public static float[] Add(float[] a, float[] b)
    {
        using var scope = torch.NewDisposeScope();
        return Data(T(a, a.Length) + T(b, b.Length));
    }
}
