using NUnit.Framework;
using TorchSharp;

namespace Rellax.Tests.Oracle;

/// <summary>
/// Fails loudly when TorchSharp cannot load its native libraries (see eng/TorchSharp.targets: the GLIBCXX_3.4.32
/// requirement of libLibTorchSharp.so is marked weak in the build output; a TorchSharp that really needs a newer
/// libstdc++ would fail here with the loader's own message).
/// </summary>
[TestFixture]
public sealed class TorchSharpLoadTests
{
    [Test]
    public void TorchCreatesAndSumsATensor()
    {
        double sum;
        try
        {
            using var t = torch.ones(2, 3, dtype: torch.float32);
            sum = t.sum().item<float>();
        }
        catch (Exception e)
        {
            Assert.Fail("TorchSharp could not load or run. Loader chain:\n" + Describe(e));
            return;
        }
        Assert.That(sum, Is.EqualTo(6.0));
    }

    private static string Describe(Exception e)
    {
        var lines = new List<string>();
        for (Exception? x = e; x is not null; x = x.InnerException) lines.Add($"{x.GetType().FullName}: {x.Message}");
        return string.Join("\n  caused by ", lines);
    }
}
