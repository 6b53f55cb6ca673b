using NUnit.Framework;
using Rellax.Kernels.Cuda;

namespace Rellax.Tests.Cuda;

/// <summary>The on-disk image cache: hits, atomic entries, corrupt entries rebuilt.</summary>
[TestFixture]
public class CudaKernelCacheTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = NvrtcTestSupport.NewTempDirectory();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void SecondCompileIsACacheHit()
    {
        NvrtcTestSupport.RequireNvrtc();
        var cache = new CudaKernelCache(_dir);
        var compiler = new NvrtcCompiler(cache);

        var first = compiler.CompileEmbedded("rmsnorm.cu", CudaArchitecture.Sm80, CudaImageKind.Ptx);
        var second = compiler.CompileEmbedded("rmsnorm.cu", CudaArchitecture.Sm80, CudaImageKind.Ptx);
        var otherArch = compiler.CompileEmbedded("rmsnorm.cu", CudaArchitecture.Sm90, CudaImageKind.Ptx);

        Assert.Multiple(() =>
        {
            Assert.That(first.FromCache, Is.False);
            Assert.That(second.FromCache, Is.True);
            Assert.That(second.Bytes, Is.EqualTo(first.Bytes));
            Assert.That(otherArch.FromCache, Is.False, "a different architecture must be a different key");
            Assert.That(cache.Hits, Is.EqualTo(1));
            Assert.That(Directory.GetFiles(_dir, "*.bin"), Has.Length.EqualTo(2));
            Assert.That(Directory.GetFiles(_dir, "*.tmp"), Is.Empty, "temporary files must be renamed away");
        });
    }

    [Test]
    public void CorruptEntryIsDetectedAndRebuilt()
    {
        NvrtcTestSupport.RequireNvrtc();
        var cache = new CudaKernelCache(_dir);
        var compiler = new NvrtcCompiler(cache);
        var first = compiler.CompileEmbedded("rmsnorm.cu", CudaArchitecture.Sm90, CudaImageKind.Cubin);
        var file = Directory.GetFiles(_dir, "*.bin").Single();
        var bytes = File.ReadAllBytes(file);
        bytes[^10] ^= 0x5a; // flip payload bits; length stays right, checksum does not
        File.WriteAllBytes(file, bytes);

        var rebuilt = compiler.CompileEmbedded("rmsnorm.cu", CudaArchitecture.Sm90, CudaImageKind.Cubin);
        var again = compiler.CompileEmbedded("rmsnorm.cu", CudaArchitecture.Sm90, CudaImageKind.Cubin);

        Assert.Multiple(() =>
        {
            Assert.That(rebuilt.FromCache, Is.False);
            Assert.That(rebuilt.Bytes, Is.EqualTo(first.Bytes));
            Assert.That(cache.Rejected, Is.EqualTo(1));
            Assert.That(again.FromCache, Is.True, "the rebuilt entry is stored again");
        });
    }

    [Test]
    public void PutAndGetRoundTripWithoutNvrtc()
    {
        var cache = new CudaKernelCache(Path.Combine(_dir, "nested", "dir"));
        var key = CudaKernelCache.ComputeKey(["a", "b"]);
        byte[] payload = [1, 2, 3, 4, 5];

        Assert.That(cache.TryGet(key, out _), Is.False);
        Assert.That(cache.Put(key, payload), Is.True);
        Assert.That(cache.TryGet(key, out var read), Is.True);
        Assert.That(read, Is.EqualTo(payload));
    }

    [TestCase(0)]
    [TestCase(7)]
    [TestCase(47)]
    [TestCase(50)]
    public void TruncatedOrGarbageEntriesAreRejectedAndDeleted(int keep)
    {
        var cache = new CudaKernelCache(_dir);
        var key = CudaKernelCache.ComputeKey(["x"]);
        cache.Put(key, new byte[100]);
        var path = cache.PathFor(key);
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..keep]);

        Assert.That(cache.TryGet(key, out _), Is.False);
        Assert.That(cache.Rejected, Is.EqualTo(1));
        Assert.That(File.Exists(path), Is.False);
    }

    [Test]
    public void KeysSeparateParts()
    {
        Assert.That(CudaKernelCache.ComputeKey(["ab", "c"]), Is.Not.EqualTo(CudaKernelCache.ComputeKey(["a", "bc"])));
        string[] parts = ["ab", "c"];
        Assert.That(CudaKernelCache.ComputeKey(parts), Is.EqualTo(CudaKernelCache.ComputeKey(parts.ToList())));
        Assert.That(CudaKernelCache.ComputeKey(["ab"]), Has.Length.EqualTo(64));
    }

    [Test]
    public void UnwritableDirectoryDoesNotThrow()
    {
        var blocker = Path.Combine(_dir, "file");
        File.WriteAllText(blocker, "not a directory");
        var cache = new CudaKernelCache(Path.Combine(blocker, "sub"));
        Assert.That(cache.Put(CudaKernelCache.ComputeKey(["k"]), [1]), Is.False);
    }

    [Test]
    public void DefaultDirectoryFollowsXdgCacheHome()
    {
        var old = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        try
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", "/tmp/xdg-test");
            Assert.That(CudaKernelCache.DefaultDirectory, Is.EqualTo("/tmp/xdg-test/rellax/cuda"));
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", null);
            Assert.That(CudaKernelCache.DefaultDirectory, Does.EndWith("/.cache/rellax/cuda"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", old);
        }
    }
}
