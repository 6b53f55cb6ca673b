namespace Rellax.Rec;

/// <summary>
/// The part of CPython 3's <c>random</c> module the reference code's training-set construction uses:
/// <c>random.seed(int)</c> followed by <c>random.sample(range(n), k)</c>, reproduced exactly (same numbers, same order),
/// so our ReiT sets pick the same rows as <c>training_set_construction.py</c> does (it calls <c>random.seed(42)</c>
/// then samples 70,000 training rows), and <c>random.shuffle</c>, which the Book-Crossing hold-out protocol uses
/// <list type="bullet">
/// <item>The generator is MT19937 (<c>Modules/_randommodule.c</c>); <c>seed(a)</c> with an int takes <c>|a|</c> as
/// little-endian 32-bit words (at least one word) and calls <c>init_by_array</c>.</item>
/// <item><c>getrandbits(k)</c> for k ≤ 32 is the next 32-bit output shifted right by 32 − k;
/// <c>_randbelow(n)</c> draws <c>getrandbits(n.bit_length())</c> until the value is below n.</item>
/// <item><c>sample(population, k)</c> (<c>Lib/random.py</c>, unchanged from 3.2 to 3.13): with
/// <c>setsize = 21 + (k &gt; 5 ? 4^ceil(log(3k, 4)) : 0)</c>, a population of at most setsize is sampled by a partial
/// shuffle of a pool (<c>j = _randbelow(n - i)</c>, take <c>pool[j]</c>, move the last live element into its place);
/// a larger one by drawing <c>_randbelow(n)</c> and redrawing values already taken.</item>
/// </list>
/// </summary>
internal sealed class PythonRandom
{
    private const int N = 624, M = 397;
    private readonly uint[] _mt = new uint[N];
    private int _next;

    /// <summary>The state <c>random.seed(seed)</c> leaves (Python takes the absolute value of an int seed).</summary>
    public PythonRandom(long seed)
    {
        ulong a = seed < 0 ? (ulong)(-(seed + 1)) + 1UL : (ulong)seed;
        uint[] key = (a >> 32) != 0 ? [(uint)a, (uint)(a >> 32)] : [(uint)a];
        InitByArray(key);
    }

    /// <summary><c>random.sample(range(population), count)</c>: <paramref name="count"/> distinct integers in
    /// [0, <paramref name="population"/>), in the order Python returns them.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or larger than the population
    /// (Python raises <c>ValueError: Sample larger than population or is negative</c>).</exception>
    public int[] Sample(int population, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(population);
        if (count < 0 || count > population)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"cannot sample {count} distinct rows from {population}");
        var result = new int[count];
        long setSize = 21;
        if (count > 5) setSize += (long)Math.Pow(4, Math.Ceiling(Math.Log(count * 3.0) / Math.Log(4.0)));
        if (population <= setSize)
        {
            var pool = new int[population];
            for (int i = 0; i < population; i++) pool[i] = i;
            for (int i = 0; i < count; i++)
            {
                int j = RandBelow(population - i);
                result[i] = pool[j];
                pool[j] = pool[population - i - 1];
            }
        }
        else
        {
            var selected = new HashSet<int>(count);
            for (int i = 0; i < count; i++)
            {
                int j = RandBelow(population);
                while (!selected.Add(j)) j = RandBelow(population);
                result[i] = j;
            }
        }
        return result;
    }

    /// <summary><c>random.shuffle(values)</c>, in place: the same permutation CPython makes for the same seed.</summary>
    public void Shuffle<T>(Span<T> values)
    {
        for (int i = values.Length - 1; i >= 1; i--)
        {
            int j = RandBelow(i + 1);
            (values[i], values[j]) = (values[j], values[i]);
        }
    }

    /// <summary><c>_randbelow_with_getrandbits(n)</c>: uniform in [0, n) by rejection, for n ≥ 1.</summary>
    internal int RandBelow(int n)
    {
        int bits = 32 - int.LeadingZeroCount(n);
        uint r = NextUInt32() >> (32 - bits);
        while (r >= (uint)n) r = NextUInt32() >> (32 - bits);
        return (int)r;
    }

    /// <summary>The next tempered MT19937 output (<c>genrand_uint32</c>).</summary>
    internal uint NextUInt32()
    {
        if (_next >= N) Twist();
        uint y = _mt[_next++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        return y;
    }

    private void Twist()
    {
        for (int k = 0; k < N; k++)
        {
            uint y = (_mt[k] & 0x80000000u) | (_mt[(k + 1) % N] & 0x7fffffffu);
            _mt[k] = _mt[(k + M) % N] ^ (y >> 1) ^ ((y & 1u) != 0 ? 0x9908b0dfu : 0u);
        }
        _next = 0;
    }

    private void InitGenrand(uint s)
    {
        _mt[0] = s;
        for (int i = 1; i < N; i++) _mt[i] = 1812433253u * (_mt[i - 1] ^ (_mt[i - 1] >> 30)) + (uint)i;
        _next = N;
    }

    private void InitByArray(uint[] key)
    {
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (int k = Math.Max(N, key.Length); k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j;
            i++;
            j++;
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
}
