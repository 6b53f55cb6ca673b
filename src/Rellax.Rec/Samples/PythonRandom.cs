namespace Rellax.Rec;

/// <summary>
/// CPython's <c>random.Random</c> as far as the ReLLa preprocessing uses it: <c>random.seed(n)</c> for an integer
/// <c>n</c> and <c>random.shuffle(list)</c>, bit for bit. The reference notebook for Book-Crossing
/// (<c>data_preprocess/BookCrossing.ipynb</c> in LaVieEnRose365/ReLLa) calls <c>set_seed(42)</c> (which calls
/// <c>random.seed(42)</c>) and then <c>random.shuffle</c>; reproducing the generator reproduces its samples.
/// </summary>
/// <remarks>
/// The generator is MT19937 seeded with <c>init_by_array</c> over the 32-bit little-endian words of <c>|n|</c> (one zero
/// word for 0), as CPython's <c>random_seed</c> does. <c>shuffle</c> is Fisher–Yates from the end:
/// <c>for i in reversed(range(1, len(x))): j = _randbelow(i + 1)</c>, where <c>_randbelow(n)</c> draws
/// <c>k = n.bit_length()</c> bits (<c>genrand_uint32() &gt;&gt; (32 - k)</c>) until the value is below <c>n</c>.
/// Checked against CPython 3.11 in the tests.
/// </remarks>
internal sealed class PythonRandom
{
    private const int N = 624, M = 397;
    private readonly uint[] _mt = new uint[N];
    private int _index;

    /// <summary>The state of <c>random.seed(seed)</c>.</summary>
    public PythonRandom(int seed)
    {
        // |seed| as an unsigned value: |int.MinValue| = 2^31 still fits one 32-bit word.
        uint key = seed < 0 ? (uint)(-(long)seed) : (uint)seed;
        InitByArray([key]);
    }

    private void InitGenrand(uint s)
    {
        _mt[0] = s;
        for (int i = 1; i < N; i++) _mt[i] = 1812433253u * (_mt[i - 1] ^ (_mt[i - 1] >> 30)) + (uint)i;
        _index = N;
    }

    private void InitByArray(uint[] key)
    {
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (int k = Math.Max(N, key.Length); k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j;
            i++; j++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
            if (j >= key.Length) j = 0;
        }
        for (int k = N - 1; k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1566083941u)) - (uint)i;
            i++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
        }
        _mt[0] = 0x80000000u;
    }

    /// <summary>The next 32-bit output of MT19937 (<c>genrand_uint32</c>).</summary>
    public uint NextUInt32()
    {
        if (_index >= N)
        {
            for (int k = 0; k < N; k++)
            {
                uint y = (_mt[k] & 0x80000000u) | (_mt[(k + 1) % N] & 0x7fffffffu);
                _mt[k] = _mt[(k + M) % N] ^ (y >> 1) ^ ((y & 1u) != 0 ? 0x9908b0dfu : 0u);
            }
            _index = 0;
        }
        uint x = _mt[_index++];
        x ^= x >> 11;
        x ^= (x << 7) & 0x9d2c5680u;
        x ^= (x << 15) & 0xefc60000u;
        x ^= x >> 18;
        return x;
    }

    /// <summary><c>_randbelow(n)</c>: a uniform integer in [0, <paramref name="n"/>), <paramref name="n"/> &gt;= 1.</summary>
    public int Below(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        int k = 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)n); // n.bit_length()
        uint r;
        do r = NextUInt32() >> (32 - k); while (r >= (uint)n);
        return (int)r;
    }

    /// <summary><c>random.shuffle(values)</c>, in place.</summary>
    public void Shuffle<T>(Span<T> values)
    {
        for (int i = values.Length - 1; i >= 1; i--)
        {
            int j = Below(i + 1);
            (values[i], values[j]) = (values[j], values[i]);
        }
    }
}
